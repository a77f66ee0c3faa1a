#!/usr/bin/env node
// A Node.js client of ferroserve that has no generated code: @grpc/proto-loader
// reads the repository's proto/ directory when the script starts, the same
// way a JavaScript user of TensorFlow Serving would load its .proto files.
// It proves that stubs in a third language (after Rust and Python) agree with
// the server on the wire.
//
//   node tests/node/predict_client.mjs --target 127.0.0.1:8500
//
// Prints one line per check and a closing "N passed, M failed" line; exits 0
// when every check passed, 1 when one failed and 2 on bad arguments.

import { Buffer } from 'node:buffer';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PROTO_ROOT = path.join(REPO_ROOT, 'proto');
const DEFAULT_FIXTURE = path.join(REPO_ROOT, 'tests', 'fixtures', 'mnist_reference.json');

const MODEL_NAME = 'mnist';
const SIGNATURE_NAME = 'serving_default';
const NUM_CLASSES = 10;
// The reference outputs were computed in float32 by another runtime; kernels
// may sum in a different order, so compare with an absolute tolerance.
const TOLERANCE = 1e-4;
const SIGNATURE_DEF_MAP_URL = 'type.googleapis.com/tensorflow.serving.SignatureDefMap';

// Options shared by proto-loader and the direct protobufjs decode below, so
// that both give objects of the same shape: field names as in the .proto
// files, 64-bit integers as decimal strings (a JS number cannot hold every
// int64), enums by name, unset fields with their default values, and the name
// of the set field of each oneof.
const CONVERSION = { longs: String, enums: String, defaults: true, oneofs: true };

function usage(message) {
  process.stderr.write(
    `error: ${message}\n` +
      'usage: node predict_client.mjs --target HOST:PORT ' +
      '[--fixture mnist_reference.json] [--deadline-s 10]\n',
  );
  process.exit(2);
}

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        target: { type: 'string' },
        fixture: { type: 'string', default: DEFAULT_FIXTURE },
        'deadline-s': { type: 'string', default: '10' },
      },
      strict: true,
    }));
  } catch (err) {
    usage(err.message);
  }
  if (!values.target) usage('--target is required');
  const deadlineS = Number(values['deadline-s']);
  if (!(deadlineS > 0)) usage(`--deadline-s must be a positive number, not ${values['deadline-s']}`);
  return { target: values.target, fixture: values.fixture, deadlineMs: deadlineS * 1000 };
}

// Loads the gRPC services from proto/ exactly as a user of proto-loader would.
function loadServices() {
  const definition = protoLoader.loadSync(
    ['tensorflow_serving/apis/prediction_service.proto', 'tensorflow_serving/apis/model_service.proto'],
    { keepCase: true, includeDirs: [PROTO_ROOT], ...CONVERSION },
  );
  return grpc.loadPackageDefinition(definition).tensorflow.serving;
}

// proto-loader only gives (de)serializers for service methods; a message that
// travels inside a google.protobuf.Any needs its own type, so the same file is
// loaded with protobufjs (which proto-loader is built on) to decode it.
function loadSignatureDefMap() {
  const root = new protobuf.Root();
  // Imports are relative to proto/; google/protobuf/*.proto are not in proto/
  // and fall through to the copies protobufjs bundles.
  root.resolvePath = (_origin, target) => {
    const candidate = path.join(PROTO_ROOT, target);
    return existsSync(candidate) ? candidate : target;
  };
  root.loadSync('tensorflow_serving/apis/get_model_metadata.proto', { keepCase: true });
  return root.lookupType('tensorflow.serving.SignatureDefMap');
}

// Calls a unary method with a deadline, so that no call can hang the run.
function unary(client, method, request, deadlineMs) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + deadlineMs }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

class CheckFailed extends Error {}

function expect(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

function expectEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  expect(a === e, `${what}: expected ${e}, got ${a}`);
}

function describeError(err) {
  if (err instanceof CheckFailed) return err.message;
  if (err && typeof err.code === 'number' && 'details' in err) {
    return `gRPC error ${grpc.status[err.code] ?? err.code} (${err.code}): ${err.details}`;
  }
  return err && err.stack ? err.stack : String(err);
}

// Both encodings TensorFlow Serving accepts for a float tensor: the repeated
// float_val field, and tensor_content holding the raw little-endian float32s.
const ENCODINGS = {
  float_val: (values) => ({ float_val: values }),
  tensor_content: (values) => {
    const bytes = Buffer.alloc(values.length * 4);
    values.forEach((value, i) => bytes.writeFloatLE(value, i * 4));
    return { tensor_content: bytes };
  },
};

function predictRequest(modelName, shape, inputAlias, encoded) {
  return {
    model_spec: { name: modelName },
    inputs: {
      [inputAlias]: {
        dtype: 'DT_FLOAT',
        tensor_shape: { dim: shape.map((size) => ({ size })) },
        ...encoded,
      },
    },
  };
}

// The float values of a DT_FLOAT tensor, whichever field the server used.
function floatsOf(tensor) {
  const content = tensor.tensor_content;
  if (content && content.length > 0) {
    expect(content.length % 4 === 0, `tensor_content has ${content.length} bytes, not a multiple of 4`);
    const bytes = Buffer.from(content);
    return Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(i * 4));
  }
  return tensor.float_val;
}

function argmax(values) {
  return values.reduce((best, value, i) => (value > values[best] ? i : best), 0);
}

function checkModelSpec(spec, what) {
  expect(spec, `${what}: response has no model_spec`);
  expectEqual(spec.name, MODEL_NAME, `${what}: model_spec.name`);
  expectEqual(spec.signature_name, SIGNATURE_NAME, `${what}: model_spec.signature_name`);
  // An Int64Value wrapper; with longs as String its value is '1'.
  expectEqual(spec.version, { value: '1' }, `${what}: model_spec.version`);
}

async function checkPredict(prediction, fixture, testCase, encoding, deadlineMs) {
  const { shape, input, probabilities: reference } = testCase;
  const batch = shape[0];
  const request = predictRequest(MODEL_NAME, shape, fixture.input, ENCODINGS[encoding](input));
  const response = await unary(prediction, 'Predict', request, deadlineMs);

  checkModelSpec(response.model_spec, 'Predict');
  const output = response.outputs[fixture.output];
  expect(output, `no output ${fixture.output}; outputs are ${Object.keys(response.outputs)}`);
  expectEqual(output.dtype, 'DT_FLOAT', 'output dtype');
  expectEqual(
    output.tensor_shape.dim.map((dim) => dim.size),
    [String(batch), String(NUM_CLASSES)],
    'output shape',
  );
  const values = floatsOf(output);
  expectEqual(values.length, batch * NUM_CLASSES, 'number of output values');
  if (testCase.class !== null && testCase.class !== undefined) {
    expectEqual(argmax(values), testCase.class, 'predicted class');
  }
  if (reference) {
    values.forEach((value, i) => {
      const diff = Math.abs(value - reference[i]);
      expect(diff <= TOLERANCE, `probability ${i} is ${value}, reference ${reference[i]} (|diff| ${diff} > ${TOLERANCE})`);
    });
  }
}

async function checkMetadata(prediction, signatureDefMap, fixture, deadlineMs) {
  const response = await unary(
    prediction,
    'GetModelMetadata',
    { model_spec: { name: MODEL_NAME }, metadata_field: ['signature_def'] },
    deadlineMs,
  );
  expectEqual(response.model_spec?.name, MODEL_NAME, 'model_spec.name');
  expectEqual(response.model_spec?.version, { value: '1' }, 'model_spec.version');
  const any = response.metadata.signature_def;
  expect(any, `no signature_def metadata; keys are ${Object.keys(response.metadata)}`);
  expectEqual(any.type_url, SIGNATURE_DEF_MAP_URL, 'Any.type_url');

  const map = signatureDefMap.toObject(signatureDefMap.decode(any.value), CONVERSION);
  const signature = map.signature_def[SIGNATURE_NAME];
  expect(signature, `no signature ${SIGNATURE_NAME}; signatures are ${Object.keys(map.signature_def)}`);
  const input = signature.inputs[fixture.input];
  expect(input, `no input ${fixture.input}; inputs are ${Object.keys(signature.inputs)}`);
  expectEqual(input.dtype, 'DT_FLOAT', `input ${fixture.input} dtype`);
  expect(
    signature.outputs[fixture.output],
    `no output ${fixture.output}; outputs are ${Object.keys(signature.outputs)}`,
  );
}

async function checkStatus(model, deadlineMs) {
  const response = await unary(model, 'GetModelStatus', { model_spec: { name: MODEL_NAME } }, deadlineMs);
  const versions = response.model_version_status;
  expectEqual(versions.length, 1, 'number of versions');
  const [status] = versions;
  expectEqual(status.version, '1', 'version');
  expectEqual(status.state, 'AVAILABLE', 'state');
  expectEqual(status.status?.error_code, 'OK', 'status.error_code');
}

async function checkUnknownModel(prediction, fixture, deadlineMs) {
  const testCase = fixture.cases[0];
  const request = predictRequest('nope', testCase.shape, fixture.input, ENCODINGS.float_val(testCase.input));
  let error;
  try {
    await unary(prediction, 'Predict', request, deadlineMs);
  } catch (err) {
    error = err;
  }
  expect(error, 'Predict on model nope succeeded');
  expect(typeof error.code === 'number', `not a gRPC error: ${describeError(error)}`);
  expectEqual(grpc.status[error.code], 'NOT_FOUND', `status code (details: ${error.details})`);
  expectEqual(error.details, 'Servable not found for request: Latest(nope)', 'details');
}

async function main() {
  const options = parseOptions();
  const fixture = JSON.parse(readFileSync(options.fixture, 'utf8'));
  const services = loadServices();
  const signatureDefMap = loadSignatureDefMap();
  const credentials = grpc.credentials.createInsecure();
  const prediction = new services.PredictionService(options.target, credentials);
  const model = new services.ModelService(options.target, credentials);

  const checks = [];
  for (const testCase of fixture.cases) {
    const label = testCase.file ?? `batch of ${testCase.shape[0]}`;
    for (const encoding of Object.keys(ENCODINGS)) {
      checks.push([
        `Predict ${label} (${encoding})`,
        () => checkPredict(prediction, fixture, testCase, encoding, options.deadlineMs),
      ]);
    }
  }
  checks.push(['GetModelMetadata signature_def', () => checkMetadata(prediction, signatureDefMap, fixture, options.deadlineMs)]);
  checks.push(['GetModelStatus', () => checkStatus(model, options.deadlineMs)]);
  checks.push(['Predict on unknown model is NOT_FOUND', () => checkUnknownModel(prediction, fixture, options.deadlineMs)]);

  // Every check runs even after a failure, so one run shows all that is wrong.
  let failed = 0;
  for (const [name, run] of checks) {
    try {
      await run();
      console.log(`ok   ${name}`);
    } catch (err) {
      failed += 1;
      console.log(`FAIL ${name}: ${describeError(err)}`);
    }
  }
  prediction.close();
  model.close();
  console.log(`${checks.length - failed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
}

main().catch((err) => {
  process.stderr.write(`error: ${describeError(err)}\n`);
  process.exitCode = 1;
});
