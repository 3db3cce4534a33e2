import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConsentSchema, UploadConsentRecordingRequest } from "../../gen/voicemodel/v1/consent_pb";
import type { ConsentService, ConsentView } from "../consent/consent-service";
import { invalidArgument } from "../errors";
import type { VoiceModelHandlers } from "./voice-model-handlers";

type ConsentRpc =
  | "recordConsent"
  | "getConsent"
  | "listConsents"
  | "revokeConsent"
  | "uploadConsentRecording"
  | "readConsentRecording"
  | "listModelsMissingConsent";

function consentToProto(c: ConsentView): MessageInitShape<typeof ConsentSchema> {
  return {
    id: c.id,
    userId: c.userId,
    modelId: c.modelId,
    trainingJobId: c.trainingJobId,
    speaker: { kind: c.speakerKind, name: c.speakerName },
    statementText: c.statementText,
    statementVersion: c.statementVersion,
    captureMethod: c.captureMethod,
    capturedAt: timestampFromDate(c.capturedAt),
    recordedBy: c.recordedBy,
    samples: c.samples,
    recording: c.recording ? { sizeBytes: BigInt(c.recording.sizeBytes), sha256: c.recording.sha256 } : undefined,
    createdAt: timestampFromDate(c.createdAt),
  };
}

/** The most bytes one streamed message carries. */
const MESSAGE_BYTES = 64 * 1024;

/** Thin handlers of consent records: one domain call each. */
export function consentHandlers(consents: ConsentService): Pick<VoiceModelHandlers, ConsentRpc> {
  return {
    async recordConsent(req, ctx) {
      return { consent: consentToProto(await consents.record(ctx, req)) };
    },
    async getConsent(req, ctx) {
      return { consent: consentToProto(await consents.get(ctx, req.consentId)) };
    },
    async listConsents(req, ctx) {
      const page = await consents.list(ctx, req);
      return { consents: page.consents.map(consentToProto), nextPageToken: page.nextPageToken };
    },
    async revokeConsent(req, ctx) {
      return await consents.revoke(ctx, req.consentId);
    },
    async uploadConsentRecording(requests, ctx) {
      const it = requests[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done || first.value.part.case !== "header") throw invalidArgument("header", "the first message must carry the header");
      const header = first.value.part.value;
      const bytes = (async function* () {
        for (let next: IteratorResult<UploadConsentRecordingRequest> = await it.next(); !next.done; next = await it.next()) {
          if (next.value.part.case !== "chunk") throw invalidArgument("chunk", "every message after the header must carry a chunk");
          yield next.value.part.value;
        }
      })();
      return { consent: consentToProto(await consents.uploadRecording(ctx, header.consentId, bytes, header.sha256)) };
    },
    async *readConsentRecording(req, ctx) {
      const { sizeBytes, sha256, bytes } = await consents.recording(ctx, req.consentId);
      let first = true;
      for await (const chunk of bytes) {
        for (let at = 0; at < chunk.length; at += MESSAGE_BYTES) {
          const part = chunk.subarray(at, at + MESSAGE_BYTES);
          yield first ? { chunk: part, sizeBytes: BigInt(sizeBytes), sha256 } : { chunk: part };
          first = false;
        }
      }
      if (first) yield { sizeBytes: BigInt(sizeBytes), sha256 };
    },
    async listModelsMissingConsent(req, ctx) {
      const page = await consents.missing(ctx, req);
      return {
        models: page.models.map((m) => ({ modelId: m.id, userId: m.userId, isActive: m.isActive, createdAt: timestampFromDate(m.createdAt) })),
        total: page.total,
        active: page.active,
        nextPageToken: page.nextPageToken,
      };
    },
  };
}
