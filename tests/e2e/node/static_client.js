// A Node.js client of Accord built on code generated from protos/ when the package is installed
// (gen/, by protoc-gen-es; see buf.gen.yaml), speaking gRPC through @connectrpc/connect-node
// rather than @grpc/grpc-js. Creates a job, gets it back and prints both as JSON with the
// proto field names, as client.js does. Usage: ACCORD_TOKEN=<token> node static_client.js
// <host:port> <url> <request_id>
"use strict";

const { toJson } = require("@bufbuild/protobuf");
const { ConnectError, createClient } = require("@connectrpc/connect");
const { createGrpcTransport } = require("@connectrpc/connect-node");
const { Engine } = require("./gen/accord/common/v1/job_spec_pb");
const { JobSchema } = require("./gen/accord/orchestrator/v1/job_pb");
const { JobService } = require("./gen/accord/orchestrator/v1/job_service_pb");

async function main() {
  const [target, url, requestId] = process.argv.slice(2);
  const jobs = createClient(JobService, createGrpcTransport({ baseUrl: `http://${target}` }));
  const headers = { authorization: `Bearer ${process.env.ACCORD_TOKEN}` };
  const spec = { engine: Engine.HTTP, steps: [{ name: "page", action: { case: "request", value: { url } } }] };
  const created = await call(2, () => jobs.createJob({ requestId, spec }, { headers }));
  const got = await call(3, () => jobs.getJob({ jobId: created.job.jobId }, { headers }));
  const json = (job) => toJson(JobSchema, job, { useProtoFieldName: true });
  console.log(JSON.stringify({ created: json(created.job), got: json(got.job) }));
}

// Runs one RPC; a gRPC error ends the process with `status`, printing the code and message.
async function call(status, rpc) {
  try {
    return await rpc();
  } catch (err) {
    const { code, rawMessage } = ConnectError.from(err);
    console.error(JSON.stringify({ error: code, details: rawMessage }));
    process.exit(status);
  }
}

main();
