//! Activations fused into the layer before them (`FusedConv`, `FusedGemm`),
//! applied to each block of output while it is still in cache.
//!
//! Only activations whose fused form gives bit for bit what the standalone
//! operator gives are fused, so fusion never changes a result.

use super::BuildError;
use crate::graph::{Attribute, Node};

/// What a fused layer applies to its output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    /// max(x, 0), NaN kept.
    Relu,
    /// x, or alpha · x below 0.
    LeakyRelu(f32),
    /// min(max(x, lo), hi), NaN kept.
    Clip(f32, f32),
}

impl Activation {
    /// The `activation` and `activation_params` attributes of a fused node
    /// (onnxruntime's FusedConv spelling); Identity when absent.
    ///
    /// # Errors
    /// For an activation not listed here, or parameters that do not fit it.
    pub fn from_node(node: &Node) -> Result<Activation, BuildError> {
        let params = node.floats_attr("activation_params")?.unwrap_or_default().to_vec();
        let act = match (node.string_attr("activation")?, params.as_slice()) {
            (None, []) => Activation::Identity,
            (Some("Relu"), []) => Activation::Relu,
            (Some("LeakyRelu"), [alpha]) => Activation::LeakyRelu(*alpha),
            (Some("LeakyRelu"), []) => Activation::LeakyRelu(0.01),
            (Some("Clip"), [lo, hi]) => Activation::Clip(*lo, *hi),
            (Some(other), p) => {
                return Err(BuildError::invalid(
                    node,
                    format!(
                        "activation '{other}' with parameters {p:?} is not one of Relu, LeakyRelu [alpha], Clip [min, max]"
                    ),
                ));
            }
            (None, p) => return Err(BuildError::invalid(node, format!("activation_params {p:?} without activation"))),
        };
        Ok(act)
    }

    /// The attributes that [`Activation::from_node`] reads back.
    pub fn attributes(self) -> Vec<(String, Attribute)> {
        let (name, params) = match self {
            Activation::Identity => return Vec::new(),
            Activation::Relu => ("Relu", vec![]),
            Activation::LeakyRelu(a) => ("LeakyRelu", vec![a]),
            Activation::Clip(lo, hi) => ("Clip", vec![lo, hi]),
        };
        vec![
            ("activation".to_string(), Attribute::String(name.to_string())),
            ("activation_params".to_string(), Attribute::Floats(params)),
        ]
    }

    /// The activation of one value.
    #[inline(always)]
    pub fn scalar(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            // `v < 0` is false for NaN, which passes through as Relu's does.
            Activation::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Activation::LeakyRelu(a) => {
                if v < 0.0 {
                    v * a
                } else {
                    v
                }
            }
            // Max then min, as the Clip kernel: NaN kept, and lo > hi gives hi.
            Activation::Clip(lo, hi) => {
                let low = if v < lo { lo } else { v };
                if low > hi { hi } else { low }
            }
        }
    }

    /// Applies the activation in place.
    #[inline]
    pub fn apply(self, values: &mut [f32]) {
        match self {
            Activation::Identity => {}
            // One loop per activation, so each vectorizes.
            Activation::Relu => values.iter_mut().for_each(|v| *v = Activation::Relu.scalar(*v)),
            other => values.iter_mut().for_each(|v| *v = other.scalar(*v)),
        }
    }
}
