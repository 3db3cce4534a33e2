import { create, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { protoPath as healthProtoPath } from "grpc-health-check";

/** The descriptors of a service's file and everything it imports, from the generated code. */
function descriptorSet(services: DescService[]): Uint8Array {
  const files = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (files.has(file.name)) return;
    file.dependencies.forEach(visit);
    files.set(file.name, file);
  };
  services.forEach((s) => visit(s.file));
  return toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: [...files.values()].map((f) => f.proto) }));
}

/**
 * Server reflection (v1 and v1alpha) for `buf curl` and grpcurl, built from the same generated
 * descriptors the handlers use, plus the health service.
 */
export function addReflection(server: grpc.Server, services: DescService[]): void {
  const ours = protoLoader.loadFileDescriptorSetFromBuffer(Buffer.from(descriptorSet(services)));
  const health = protoLoader.loadSync(healthProtoPath);
  new ReflectionService({ ...health, ...ours }).addToServer(server);
}
