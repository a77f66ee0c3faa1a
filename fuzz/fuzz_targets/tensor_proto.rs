//! A PredictRequest's tensors as the server reads them: any bytes decoded
//! as a TensorProto, converted to a tensor (and back) without a panic or an
//! allocation the shape does not justify. Shapes over 16 MiB are checked
//! (header only) but not filled: the server accepts tensors up to 2 GiB and
//! bounds what requests hold with its request budget, not here.
#![no_main]

use ferroserve::proto::tensorflow::TensorProto;
use ferroserve::tensor::proto::{from_proto, header, to_proto, to_proto_content};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(proto) = TensorProto::decode(data) else { return };
    if let Ok(head) = header(&proto)
        && head.shape.iter().product::<usize>().saturating_mul(head.dtype.size_of()) > 16 << 20
    {
        return;
    }
    if let Ok(tensor) = from_proto(&proto) {
        let again = from_proto(&to_proto(tensor.clone())).expect("a tensor's own proto converts back");
        assert_eq!(again.shape(), tensor.shape());
        from_proto(&to_proto_content(tensor)).expect("a tensor's tensor_content proto converts back");
    }
});
