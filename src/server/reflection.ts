import { create, fromBinary, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import {
  FileDescriptorProtoSchema,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb";
import { file_google_rpc_status } from "../../gen/google/rpc/status_pb";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb";

type Request = v1.ServerReflectionRequest;
type Response = v1.ServerReflectionResponse;

/** Every file a caller can reach, and which file declares each fully-qualified name. */
interface Index {
  files: Map<string, DescFile>;
  symbols: Map<string, DescFile>;
  /** "<extendee>#<number>" -> the file declaring that extension. */
  extensions: Map<string, DescFile>;
}

/** Walks the descriptors as written (map entry messages included), not protobuf-es's view. */
function buildIndex(roots: DescFile[]): Index {
  const index: Index = { files: new Map(), symbols: new Map(), extensions: new Map() };
  const addFile = (file: DescFile) => {
    // DescFile.name lacks the ".proto" suffix; reflection asks by the name as written.
    if (index.files.has(file.proto.name)) return;
    index.files.set(file.proto.name, file);
    file.dependencies.forEach(addFile);
    const name = (scope: string, local: string) => (scope ? `${scope}.${local}` : local);
    const add = (symbol: string) => index.symbols.set(symbol, file);
    const addExtensions = (scope: string, list: FieldDescriptorProto[]) => {
      for (const ext of list) {
        add(name(scope, ext.name));
        index.extensions.set(`${ext.extendee.replace(/^\./, "")}#${ext.number}`, file);
      }
    };
    // Enum values are scoped like C++ enumerators: siblings of their enum, not children.
    const addEnums = (scope: string, list: EnumDescriptorProto[]) => {
      for (const e of list) {
        add(name(scope, e.name));
        for (const value of e.value) add(name(scope, value.name));
      }
    };
    const addMessages = (scope: string, list: DescriptorProto[]) => {
      for (const m of list) {
        const full = name(scope, m.name);
        add(full);
        for (const part of [...m.field, ...m.oneofDecl]) add(`${full}.${part.name}`);
        addMessages(full, m.nestedType);
        addEnums(full, m.enumType);
        addExtensions(full, m.extension);
      }
    };
    const { proto } = file;
    addMessages(proto.package, proto.messageType);
    addEnums(proto.package, proto.enumType);
    addExtensions(proto.package, proto.extension);
    for (const service of proto.service) {
      const full = name(proto.package, service.name);
      add(full);
      for (const method of service.method) add(`${full}.${method.name}`);
    }
  };
  roots.forEach(addFile);
  return index;
}

/** The file first, then everything it imports, each once (what reflection clients expect). */
function withImports(file: DescFile): Uint8Array[] {
  const seen = new Map<string, DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f.name)) return;
    seen.set(f.name, f);
    f.dependencies.forEach(visit);
  };
  visit(file);
  return [...seen.values()].map((f) => toBinary(FileDescriptorProtoSchema, f.proto));
}

/**
 * gRPC server reflection (v1 and v1alpha) answered from the exact descriptors protobuf-es
 * generated, so `buf curl` and grpcurl see the contract as written, imports and all.
 * (@grpc/reflection rebuilds descriptors through protobufjs and drops their imports.)
 * The google.rpc error detail files are served too: no service imports them, yet clients need
 * them to decode the details of an error.
 */
export function addReflection(server: grpc.Server, services: DescService[]): void {
  const index = buildIndex([
    ...services.map((s) => s.file),
    file_google_rpc_status,
    file_google_rpc_error_details,
    file_grpc_health_v1_health,
    v1.file_grpc_reflection_v1_reflection,
    v1alpha.file_grpc_reflection_v1alpha_reflection,
  ]);
  const serviceNames = [
    ...services.map((s) => s.typeName),
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
  ];

  const answer = (request: Request): Response["messageResponse"] => {
    const notFound = (what: string): Response["messageResponse"] => ({
      case: "errorResponse",
      value: create(v1.ErrorResponseSchema, { errorCode: grpc.status.NOT_FOUND, errorMessage: `${what} not found` }),
    });
    const files = (file: DescFile | undefined, what: string): Response["messageResponse"] =>
      file
        ? { case: "fileDescriptorResponse", value: create(v1.FileDescriptorResponseSchema, { fileDescriptorProto: withImports(file) }) }
        : notFound(what);
    const { messageRequest: r } = request;
    switch (r.case) {
      case "listServices":
        return { case: "listServicesResponse", value: create(v1.ListServiceResponseSchema, { service: serviceNames.map((name) => ({ name })) }) };
      case "fileByFilename":
        return files(index.files.get(r.value), `file ${r.value}`);
      case "fileContainingSymbol":
        return files(index.symbols.get(r.value), `symbol ${r.value}`);
      case "fileContainingExtension": {
        const file = index.extensions.get(`${r.value.containingType}#${r.value.extensionNumber}`);
        return files(file, `extension ${r.value.extensionNumber} of ${r.value.containingType}`);
      }
      case "allExtensionNumbersOfType": {
        if (!index.symbols.has(r.value)) return notFound(`type ${r.value}`);
        const numbers = [...index.extensions.keys()].filter((key) => key.startsWith(`${r.value}#`)).map((key) => Number(key.slice(r.value.length + 1)));
        return { case: "allExtensionNumbersResponse", value: create(v1.ExtensionNumberResponseSchema, { baseTypeName: r.value, extensionNumber: numbers }) };
      }
      default:
        return { case: "errorResponse", value: create(v1.ErrorResponseSchema, { errorCode: grpc.status.INVALID_ARGUMENT, errorMessage: "empty reflection request" }) };
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
        call.on("data", (request: Request) =>
          call.write(create(v1.ServerReflectionResponseSchema, { validHost: request.host, originalRequest: request, messageResponse: answer(request) })),
        );
        call.on("end", () => call.end());
        call.on("error", () => call.end());
      },
    });
  }
}
