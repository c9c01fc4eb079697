// A Node.js client of Accord using @grpc/grpc-js and @grpc/proto-loader on the repository's
// .proto files as they are: protos/ is the one include directory. Creates a job, gets it
// back and prints both as JSON. Usage: ACCORD_TOKEN=<token> node client.js <host:port> <url>
// <request_id>
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const protos = path.resolve(__dirname, "../../../protos");
const definition = protoLoader.loadSync("accord/orchestrator/v1/job_service.proto", {
  includeDirs: [protos],
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
});
const accord = grpc.loadPackageDefinition(definition).accord;

const [target, url, requestId] = process.argv.slice(2);
const jobs = new accord.orchestrator.v1.JobService(target, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${process.env.ACCORD_TOKEN}`);

const spec = { engine: "ENGINE_HTTP", steps: [{ name: "page", request: { url } }] };
jobs.CreateJob({ request_id: requestId, spec }, metadata, (err, created) => {
  if (err) {
    console.error(JSON.stringify({ error: err.code, details: err.details }));
    process.exit(2);
  }
  jobs.GetJob({ job_id: created.job.job_id }, metadata, (err2, got) => {
    if (err2) {
      console.error(JSON.stringify({ error: err2.code, details: err2.details }));
      process.exit(3);
    }
    console.log(JSON.stringify({ created: created.job, got: got.job }));
    jobs.close();
  });
});
