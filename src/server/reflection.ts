import { create, createRegistry, fromBinary, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb";

type Request = v1.ServerReflectionRequest;
type Response = v1.ServerReflectionResponse;

/**
 * gRPC server reflection (v1 and v1alpha) answered from the exact descriptors protobuf-es
 * generated, so `buf curl` and grpcurl see the contract as written, imports and all.
 * (@grpc/reflection rebuilds descriptors through protobufjs and drops their imports.)
 */
export function addReflection(server: grpc.Server, services: DescService[]): void {
  const roots = [...services.map((s) => s.file), file_grpc_health_v1_health, v1.file_grpc_reflection_v1_reflection, v1alpha.file_grpc_reflection_v1alpha_reflection];
  const registry = createRegistry(...roots);
  const filesByName = new Map<string, DescFile>();
  const collect = (f: DescFile) => {
    if (filesByName.has(f.name)) return;
    filesByName.set(f.name, f);
    f.dependencies.forEach(collect);
  };
  roots.forEach(collect);
  const serviceNames = [
    ...services.map((s) => s.typeName),
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
  ];

  /** The file and everything it imports, each encoded once. */
  const withImports = (file: DescFile): Uint8Array[] => {
    const seen = new Map<string, DescFile>();
    const visit = (f: DescFile) => {
      if (seen.has(f.name)) return;
      seen.set(f.name, f);
      f.dependencies.forEach(visit);
    };
    visit(file);
    return [...seen.values()].map((f) => toBinary(FileDescriptorProtoSchema, f.proto));
  };

  const fileOfSymbol = (symbol: string): DescFile | undefined => {
    const found = registry.get(symbol) ?? registry.get(symbol.slice(0, symbol.lastIndexOf(".")));
    return found && "file" in found ? found.file : undefined;
  };

  const answer = (request: Request): Response => {
    const base = { validHost: request.host, originalRequest: request };
    const files = (file: DescFile | undefined, what: string): Response =>
      file
        ? create(v1.ServerReflectionResponseSchema, {
            ...base,
            messageResponse: { case: "fileDescriptorResponse", value: { fileDescriptorProto: withImports(file) } },
          })
        : create(v1.ServerReflectionResponseSchema, {
            ...base,
            messageResponse: { case: "errorResponse", value: { errorCode: grpc.status.NOT_FOUND, errorMessage: `${what} not found` } },
          });
    switch (request.messageRequest.case) {
      case "listServices":
        return create(v1.ServerReflectionResponseSchema, {
          ...base,
          messageResponse: { case: "listServicesResponse", value: { service: serviceNames.map((name) => ({ name })) } },
        });
      case "fileByFilename":
        return files(filesByName.get(request.messageRequest.value), `file ${request.messageRequest.value}`);
      case "fileContainingSymbol":
        return files(fileOfSymbol(request.messageRequest.value), `symbol ${request.messageRequest.value}`);
      default:
        return create(v1.ServerReflectionResponseSchema, {
          ...base,
          messageResponse: { case: "errorResponse", value: { errorCode: grpc.status.UNIMPLEMENTED, errorMessage: "extensions are not supported" } },
        });
    }
  };

  // v1 and v1alpha messages are identical on the wire; only the service name differs.
  for (const descriptor of [v1.ServerReflection, v1alpha.ServerReflection]) {
    const method = descriptor.method.serverReflectionInfo;
    const definition: grpc.ServiceDefinition = {
      ServerReflectionInfo: {
        path: `/${descriptor.typeName}/ServerReflectionInfo`,
        requestStream: true,
        responseStream: true,
        requestSerialize: (m: Request) => Buffer.from(toBinary(v1.ServerReflectionRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(v1.ServerReflectionRequestSchema, b),
        responseSerialize: (m: Response) => Buffer.from(toBinary(v1.ServerReflectionResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(v1.ServerReflectionResponseSchema, b),
        originalName: method.localName,
      },
    };
    server.addService(definition, {
      ServerReflectionInfo: (call: grpc.ServerDuplexStream<Request, Response>) => {
        call.on("data", (request: Request) => call.write(answer(request)));
        call.on("end", () => call.end());
        call.on("error", () => call.end());
      },
    });
  }
}
