import type { RecordConsentRequest } from "../../gen/voicemodel/v1/consent_pb";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { AppError, invalidArgument } from "../errors";
import * as valid from "../voice-models/validation";
import { CAPTURE_METHODS, SPEAKER_KINDS, type CaptureMethod, type SpeakerKind, type TrainingSampleRef } from "./consent-repository";

export const consentNotFound = (consentId: string) =>
  new AppError("CONSENT_NOT_FOUND", `consent record ${consentId} not found`, { field: "consentId" });

const SHA256_HEX = /^[0-9a-f]{64}$/;
const MAX_SAMPLES = 100;
/** Any control character but tab and newline (statements are shown to people as they are). */
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f]/;

function text(value: string | undefined, field: string, max: number): string {
  if (value === undefined || value.trim() === "") throw invalidArgument(field, "is required");
  if (value.length > max) throw invalidArgument(field, `must be at most ${max} characters`);
  if (CONTROL.test(value)) throw invalidArgument(field, "must not hold control characters");
  return value;
}

export const sha256 = (value: string, field: string) => {
  if (!SHA256_HEX.test(value)) throw invalidArgument(field, "must be 64 lowercase hex digits");
  return value;
};

/** RecordConsent's fields, validated; nothing is written when this throws. */
export interface ConsentInput {
  modelId: string | undefined;
  trainingJobId: string | undefined;
  speakerKind: SpeakerKind;
  speakerName: string | undefined;
  statementText: string;
  statementVersion: string;
  captureMethod: CaptureMethod;
  capturedAt: Date;
  samples: TrainingSampleRef[];
}

export function consentInput(req: RecordConsentRequest, now = new Date()): ConsentInput {
  const modelId = req.modelId === undefined ? undefined : valid.modelId(req.modelId);
  const trainingJobId = req.trainingJobId === undefined ? undefined : valid.trainingJobId(req.trainingJobId);
  if (!modelId && !trainingJobId) throw invalidArgument("modelId", "give modelId or trainingJobId: the consent must cover a model or a training job");
  const kind = req.speaker?.kind ?? "";
  if (!(SPEAKER_KINDS as readonly string[]).includes(kind)) throw invalidArgument("speaker.kind", `must be one of ${SPEAKER_KINDS.join(", ")}`);
  const speakerKind = kind as SpeakerKind;
  let speakerName: string | undefined;
  if (speakerKind === "other") speakerName = text(req.speaker?.name, "speaker.name", 200);
  else if (req.speaker?.name !== undefined) throw invalidArgument("speaker.name", `must be absent for speaker kind "owner"`);
  if (!(CAPTURE_METHODS as readonly string[]).includes(req.captureMethod)) {
    throw invalidArgument("captureMethod", `must be one of ${CAPTURE_METHODS.join(", ")}`);
  }
  const capturedAt = req.capturedAt ? timestampDate(req.capturedAt) : now;
  if (Number.isNaN(capturedAt.getTime()) || capturedAt.getTime() > now.getTime() + 60_000) throw invalidArgument("capturedAt", "must not be in the future");
  if (capturedAt.getUTCFullYear() < 1970) throw invalidArgument("capturedAt", "must be after 1970");
  if (req.samples.length > MAX_SAMPLES) throw invalidArgument("samples", `at most ${MAX_SAMPLES}`);
  const samples = req.samples.map((s, i) => ({ ref: text(s.ref, `samples[${i}].ref`, 1024), sha256: sha256(s.sha256, `samples[${i}].sha256`) }));
  return {
    modelId,
    trainingJobId,
    speakerKind,
    speakerName,
    statementText: text(req.statementText, "statementText", 10_000),
    statementVersion: text(req.statementVersion, "statementVersion", 64),
    captureMethod: req.captureMethod as CaptureMethod,
    capturedAt,
    samples,
  };
}
