import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, type DescriptorProto, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import {
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "../gen/grpc/reflection/v1/reflection_pb";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { useTestServer } from "./helpers/harness";

// A reflection client written against the wire (raw ServerReflectionInfo streams), the way grpcurl
// and buf curl use it: each symbol is asked for on its own, and the answer must be self-contained.
const server = useTestServer();

type Ask = (request: Omit<Partial<ServerReflectionRequest>, "$typeName">) => Promise<ServerReflectionResponse>;

/** One ServerReflectionInfo stream; requests are answered in order. */
function openReflection(version: "v1" | "v1alpha"): { ask: Ask; close(): void } {
  const client = new grpc.Client(`127.0.0.1:${server().grpcPort}`, grpc.credentials.createInsecure());
  const call = client.makeBidiStreamRequest(
    `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
    (m: ServerReflectionRequest) => Buffer.from(toBinary(ServerReflectionRequestSchema, m)),
    (b: Buffer) => fromBinary(ServerReflectionResponseSchema, b),
  );
  const waiting: Array<{ resolve(r: ServerReflectionResponse): void; reject(e: Error): void }> = [];
  call.on("data", (r: ServerReflectionResponse) => waiting.shift()?.resolve(r));
  call.on("error", (e: Error) => waiting.splice(0).forEach((w) => w.reject(e)));
  return {
    ask: (request) =>
      new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        call.write(create(ServerReflectionRequestSchema, request));
      }),
    close() {
      call.end();
      client.close();
    },
  };
}

const strip = (typeName: string) => typeName.replace(/^\./, "");

/** Messages and enums a file declares, by fully-qualified name. */
function declared(file: FileDescriptorProto): Map<string, DescriptorProto | "enum"> {
  const out = new Map<string, DescriptorProto | "enum">();
  const scope = (prefix: string, messages: DescriptorProto[], enums: { name: string }[]) => {
    for (const e of enums) out.set(`${prefix}.${e.name}`, "enum");
    for (const m of messages) {
      out.set(`${prefix}.${m.name}`, m);
      scope(`${prefix}.${m.name}`, m.nestedType, m.enumType);
    }
  };
  scope(file.package, file.messageType, file.enumType);
  return out;
}

/** The FileDescriptorProtos of a reply; fails with the server's error when there is none. */
function filesOf(reply: ServerReflectionResponse, what: string): FileDescriptorProto[] {
  if (reply.messageResponse.case !== "fileDescriptorResponse") {
    throw new Error(`${what}: ${reply.messageResponse.case === "errorResponse" ? reply.messageResponse.value.errorMessage : reply.messageResponse.case}`);
  }
  const files = reply.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
  // Self-contained: every import of every file sent is in the same reply.
  const names = new Set(files.map((f) => f.name));
  for (const f of files) for (const dep of f.dependency) expect({ what, file: f.name, dep, sent: names.has(dep) }).toMatchObject({ sent: true });
  return files;
}

describe.each(["v1", "v1alpha"] as const)("server reflection %s, raw ServerReflectionInfo", (version) => {
  let reflection: ReturnType<typeof openReflection>;
  beforeAll(() => {
    reflection = openReflection(version);
  });
  afterAll(() => reflection.close());

  test("resolves every message and enum reachable from every listed service, each by its own name", async () => {
    const listed = await reflection.ask({ messageRequest: { case: "listServices", value: "" } });
    if (listed.messageResponse.case !== "listServicesResponse") throw new Error(listed.messageResponse.case);
    const services = listed.messageResponse.value.service.map((s) => s.name);
    expect(services).toEqual(expect.arrayContaining([VoiceModelService.typeName, "grpc.health.v1.Health", `grpc.reflection.${version}.ServerReflection`]));

    const pending: string[] = [];
    const fileNames = new Set<string>();
    for (const name of services) {
      const files = filesOf(await reflection.ask({ messageRequest: { case: "fileContainingSymbol", value: name } }), name);
      const service = files[0].service.find((s) => `${files[0].package}.${s.name}` === name);
      expect({ name, found: !!service }).toEqual({ name, found: true });
      for (const method of service!.method) {
        pending.push(strip(method.inputType), strip(method.outputType));
        const methodReply = await reflection.ask({ messageRequest: { case: "fileContainingSymbol", value: `${name}.${method.name}` } });
        expect(filesOf(methodReply, `${name}.${method.name}`)[0].name).toBe(files[0].name);
      }
    }

    const resolved = new Set<string>();
    while (pending.length > 0) {
      const typeName = pending.pop()!;
      if (resolved.has(typeName)) continue;
      const files = filesOf(await reflection.ask({ messageRequest: { case: "fileContainingSymbol", value: typeName } }), typeName);
      files.forEach((f) => fileNames.add(f.name));
      // The first file is the one that declares the symbol.
      const found = declared(files[0]).get(typeName);
      expect({ typeName, file: files[0].name, declared: found !== undefined }).toMatchObject({ declared: true });
      resolved.add(typeName);
      if (found === "enum" || !found) continue;
      for (const field of found.field) if (field.typeName) pending.push(strip(field.typeName));
    }
    for (const name of [
      "voicemodel.v1.VoiceModel",
      "voicemodel.v1.ExportVoiceModelResponse",
      "voicemodel.v1.ModelFileInfo",
      "google.protobuf.Struct",
      "google.protobuf.Value",
      "google.protobuf.Timestamp",
      "google.protobuf.FieldMask",
      "grpc.health.v1.HealthCheckResponse.ServingStatus",
    ]) {
      expect(resolved).toContain(name);
    }
    expect(resolved.size).toBeGreaterThan(100);

    // Every file seen is also served by its name, with its imports.
    for (const name of fileNames) {
      const files = filesOf(await reflection.ask({ messageRequest: { case: "fileByFilename", value: name } }), name);
      expect(files[0].name).toBe(name);
    }
  });

  test("serves the error details no service imports: google.rpc.ErrorInfo and google.rpc.Status", async () => {
    const info = filesOf(await reflection.ask({ messageRequest: { case: "fileContainingSymbol", value: "google.rpc.ErrorInfo" } }), "ErrorInfo");
    expect(info[0].name).toBe("google/rpc/error_details.proto");
    expect(declared(info[0]).has("google.rpc.ErrorInfo")).toBe(true);
    expect(info.map((f) => f.name)).toContain("google/protobuf/duration.proto");
    const status = filesOf(await reflection.ask({ messageRequest: { case: "fileContainingSymbol", value: "google.rpc.Status" } }), "Status");
    expect(status.map((f) => f.name)).toEqual(["google/rpc/status.proto", "google/protobuf/any.proto"]);
    const byName = filesOf(await reflection.ask({ messageRequest: { case: "fileByFilename", value: "google/rpc/status.proto" } }), "status.proto");
    expect(byName[0].options?.goPackage).toBe("google.golang.org/genproto/googleapis/rpc/status;status");
  });

  test("resolves fields, enum values and oneofs; refuses unknown names with NOT_FOUND", async () => {
    for (const symbol of ["voicemodel.v1.VoiceModel.quality_score", "grpc.health.v1.HealthCheckResponse.SERVING", "voicemodel.v1.UploadModelFileRequest.part"]) {
      filesOf(await reflection.ask({ messageRequest: { case: "fileContainingSymbol", value: symbol } }), symbol);
    }
    for (const request of [
      { case: "fileContainingSymbol", value: "voicemodel.v1.NoSuchMessage" },
      { case: "fileByFilename", value: "voicemodel/v1/nothing.proto" },
    ] as const) {
      const reply = await reflection.ask({ messageRequest: request });
      expect(reply.messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: grpc.status.NOT_FOUND } });
    }
    const numbers = await reflection.ask({ messageRequest: { case: "allExtensionNumbersOfType", value: "voicemodel.v1.VoiceModel" } });
    expect(numbers.messageResponse).toMatchObject({ case: "allExtensionNumbersResponse", value: { baseTypeName: "voicemodel.v1.VoiceModel", extensionNumber: [] } });
  });
});
