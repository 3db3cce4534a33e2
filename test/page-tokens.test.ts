// Page tokens are opaque and signed: only a token this service minted, for the same list, caller
// and filters, opens; anything else is INVALID_ARGUMENT naming pageToken, on every list and both
// transports. Tokens are the same on every instance that shares the master key, across restarts
// and a key rotation.
import { Code } from "@connectrpc/connect";
import { createHmac, hkdfSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expectRpcError } from "./helpers/expect-error";
import { createModel, startTestServer, TRANSPORTS, useTestServer, type Actor, type MethodName, type TestServer, type Transport } from "./helpers/harness";

const MASTER_KEY = randomBytes(32);
const server = useTestServer({ env: { MASTER_KEY: MASTER_KEY.toString("base64") } });

const refused = { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "pageToken" };

interface Paged {
  method: MethodName;
  /** Who lists, and the request (limit included) that pages. */
  who: () => Actor;
  request: object;
  /** The ids of one reply's items. */
  ids(message: any): string[];
  /** The same request with other filters (none for a list whose only filter is whose list it is). */
  otherFilters?: object;
}

let owner: Actor;
let friend: Actor;
let stranger: Actor;
const LISTS: Paged[] = [
  {
    method: "listVoiceModels",
    who: () => owner,
    request: { limit: 2 },
    ids: (m) => m.models.map((x: { id: string }) => x.id),
    otherFilters: { limit: 2, provider: "xtts-v2" },
  },
  {
    method: "listAuditEvents",
    who: () => owner,
    request: { limit: 2, action: "model.created" },
    ids: (m) => m.events.map((x: { id: string }) => x.id),
    otherFilters: { limit: 2, action: "share.granted" },
  },
  {
    method: "listSharedVoiceModels",
    who: () => friend,
    request: { limit: 2 },
    ids: (m) => m.sharedModels.map((x: { model: { id: string } }) => x.model.id),
  },
  {
    method: "listBackups",
    who: () => owner,
    request: { limit: 2 },
    ids: (m) => m.backups.map((x: { backupId: string }) => x.backupId),
  },
];

beforeAll(async () => {
  [owner, friend, stranger] = await Promise.all([server().actor(), server().actor(), server().actor()]);
  for (let i = 0; i < 5; i++) {
    const model = await createModel(owner, { qualityScore: 0.1 + i / 10, provider: i % 2 ? "openai-tts" : "xtts-v2" });
    await owner.grpc.shareVoiceModel({ modelId: model.id, targetUserIds: [friend.userId, stranger.userId], permissions: ["view"] });
  }
  await createModel(stranger);
  // Five backups of the owner's, made by the service role (no backup rate limit for it).
  const tts = await server().serviceActor();
  for (let i = 0; i < 5; i++) {
    const made = await server().call("grpc", "createBackup", { userId: owner.userId }, tts.token);
    expect(made.code).toBe(0);
  }
});

async function firstPage(on: TestServer, transport: Transport, list: Paged): Promise<string> {
  const outcome = await on.call(transport, list.method, list.request, list.who().token);
  expect(outcome.code).toBe(0);
  expect(outcome.message.nextPageToken).toMatch(/^[A-Za-z0-9_-]{20,80}$/);
  return outcome.message.nextPageToken;
}

/** Every page's ids, following nextPageToken to the end. */
async function allPages(on: TestServer, transport: Transport, list: Paged, first?: string): Promise<string[]> {
  const ids: string[] = [];
  let pageToken = first ?? "";
  do {
    const outcome = await on.call(transport, list.method, { ...list.request, pageToken }, list.who().token);
    expect({ code: outcome.code, error: outcome.errorMessage }).toEqual({ code: 0, error: undefined });
    ids.push(...list.ids(outcome.message));
    pageToken = outcome.message.nextPageToken;
  } while (pageToken);
  return ids;
}

const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

function otherLastCharacter(token: string): string {
  return token.slice(0, -1) + BASE64URL[BASE64URL.indexOf(token[token.length - 1]) ^ 1];
}

function flipBit(token: string, byte: number, bit: number): string {
  const raw = Buffer.from(token, "base64url");
  raw[byte] ^= 1 << bit;
  return raw.toString("base64url");
}

describe.each(TRANSPORTS)("over %s", (transport) => {
  describe.each(LISTS)("$method", (list) => {
    test("a valid token pages through every item once, in the order of one big page", async () => {
      const whole = await server().call(transport, list.method, { ...list.request, limit: 100 }, list.who().token);
      const expected = list.ids(whole.message);
      expect(expected).toHaveLength(5);
      expect(await allPages(server(), transport, list)).toEqual(expected);
    });

    test("garbage, truncated, extended, huge and non-canonical tokens: INVALID_ARGUMENT", async () => {
      const token = await firstPage(server(), transport, list);
      const raw = Buffer.from(token, "base64url");
      const bad = [
        "not-a-token",
        "%%%",
        "a",
        token.slice(0, -1),
        token.slice(1),
        token + "A",
        token + token,
        token.slice(0, -2) + "==",
        "A".repeat(token.length),
        raw.subarray(0, raw.length - 1).toString("base64url"),
        Buffer.concat([raw, Buffer.from([0])]).toString("base64url"),
        "x".repeat(100_000),
        // The old unsigned format.
        Buffer.from(JSON.stringify(["x", 1, 500, 0, "00000000-0000-4000-8000-000000000000"])).toString("base64url"),
        // The last character's lowest bit: unused by base64url when the length leaves spare bits.
        otherLastCharacter(token),
      ];
      for (const pageToken of bad) {
        if (pageToken === token) continue;
        expectRpcError(await server().call(transport, list.method, { ...list.request, pageToken }, list.who().token), refused);
      }
    });

    test("every single bit flipped: INVALID_ARGUMENT", async () => {
      const token = await firstPage(server(), transport, list);
      const bytes = Buffer.from(token, "base64url").length;
      for (let byte = 0; byte < bytes; byte++) {
        const pageToken = flipBit(token, byte, byte % 8);
        expectRpcError(await server().call(transport, list.method, { ...list.request, pageToken }, list.who().token), refused);
      }
    });

    test("another caller's token: INVALID_ARGUMENT", async () => {
      const token = await firstPage(server(), transport, list);
      const other = list.who() === owner ? stranger : owner;
      expectRpcError(await server().call(transport, list.method, { ...list.request, pageToken: token }, other.token), refused);
      // The right user through a privileged caller is still another caller.
      const admin = await server().adminActor();
      const request = { ...list.request, userId: list.who().userId, pageToken: token };
      expectRpcError(await server().call(transport, list.method, request, admin.token), refused);
    });

    if (list.otherFilters) {
      test("the same caller with other filters: INVALID_ARGUMENT", async () => {
        const token = await firstPage(server(), transport, list);
        const outcome = await server().call(transport, list.method, { ...list.otherFilters, pageToken: token }, list.who().token);
        expectRpcError(outcome, refused);
      });
    }

    test("a token of another list: INVALID_ARGUMENT", async () => {
      for (const other of LISTS.filter((l) => l.method !== list.method)) {
        const token = await firstPage(server(), transport, other);
        // Sent by the caller the token was minted for, with no filters it could differ in.
        const request = { ...list.request, pageToken: token };
        expectRpcError(await server().call(transport, list.method, request, other.who().token), refused);
      }
    });
  });

  test("a service caller's token is bound to the user it lists", async () => {
    const service = await server().serviceActor();
    const first = await server().call(transport, "listVoiceModels", { userId: owner.userId, limit: 2 }, service.token);
    const pageToken = first.message.nextPageToken;
    expect((await server().call(transport, "listVoiceModels", { userId: owner.userId, limit: 2, pageToken }, service.token)).code).toBe(0);
    expectRpcError(await server().call(transport, "listVoiceModels", { userId: stranger.userId, limit: 2, pageToken }, service.token), refused);
  });
});

/** A token the test signs itself with the server's key: the MAC verifies, the fields are out of range. */
function signed(list: string, callerId: string, filters: object, body: Buffer, master = MASTER_KEY): string {
  const key = Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), `voicemodel page token v1\0${list}`, 32));
  const hmac = createHmac("sha256", key);
  for (const part of [Buffer.from(callerId), Buffer.from(JSON.stringify(filters))]) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(part.length);
    hmac.update(length).update(part);
  }
  const full = Buffer.concat([Buffer.from([1]), body]);
  return Buffer.concat([full, hmac.update(full).digest().subarray(0, 16)]).toString("base64url");
}

const int64 = (value: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(value);
  return b;
};

describe("fields are range-checked even when the MAC verifies", () => {
  const uuid = Buffer.from("0b9ad2c42c384c7e9d555e0f6d0b8a11", "hex");
  const now = BigInt(Date.now());
  test("the layout the test signs with is the server's (a well-formed token opens)", async () => {
    const filters = { userId: owner.userId, showDeleted: false };
    const token = signed("ListVoiceModels", owner.userId, filters, Buffer.concat([Buffer.from([0]), int64(500n), int64(now), uuid]));
    for (const transport of TRANSPORTS) {
      expect((await server().call(transport, "listVoiceModels", { pageToken: token }, owner.token)).code).toBe(0);
    }
  });

  test.each([
    ["a flag of 2", Buffer.concat([Buffer.from([2]), int64(500n), int64(now), uuid])],
    ["a quality above 1000", Buffer.concat([Buffer.from([0]), int64(1001n), int64(now), uuid])],
    ["a negative quality", Buffer.concat([Buffer.from([0]), int64(-1n), int64(now), uuid])],
    ["a time past year 9999", Buffer.concat([Buffer.from([0]), int64(500n), int64(8_640_000_000_000_000n), uuid])],
    ["a time before year 1", Buffer.concat([Buffer.from([0]), int64(500n), int64(-62_135_596_800_001n), uuid])],
    ["a time beyond safe integers", Buffer.concat([Buffer.from([0]), int64(500n), int64(2n ** 62n), uuid])],
    ["a field short", Buffer.concat([Buffer.from([0]), int64(500n), int64(now)])],
  ])("ListVoiceModels: %s is INVALID_ARGUMENT", async (_name, body) => {
    const token = signed("ListVoiceModels", owner.userId, { userId: owner.userId, showDeleted: false }, body);
    for (const transport of TRANSPORTS) {
      expectRpcError(await server().call(transport, "listVoiceModels", { pageToken: token }, owner.token), refused);
    }
  });

  test.each([
    ["event id 0", 0n],
    ["a negative event id", -5n],
  ])("ListAuditEvents: %s is INVALID_ARGUMENT", async (_name, id) => {
    const filters = { userId: owner.userId };
    const token = signed("ListAuditEvents", owner.userId, filters, Buffer.concat([int64(now), int64(id)]));
    for (const transport of TRANSPORTS) {
      expectRpcError(await server().call(transport, "listAuditEvents", { pageToken: token }, owner.token), refused);
    }
  });
});

describe("instances and restarts", () => {
  const list = LISTS[0];
  const start = (key: Buffer, previous?: Buffer) =>
    startTestServer({
      database: server().db,
      env: { MASTER_KEY: key.toString("base64"), ...(previous ? { MASTER_KEYS_PREVIOUS: previous.toString("base64") } : {}) },
    });

  test("a token of one instance pages on another with the same master key", async () => {
    const expected = await allPages(server(), "grpc", list);
    const twin = await start(MASTER_KEY);
    try {
      for (const transport of TRANSPORTS) {
        const token = await firstPage(server(), transport, list);
        expect([...expected.slice(0, 2), ...(await allPages(twin, transport, list, token))]).toEqual(expected);
      }
    } finally {
      await twin.close();
    }
  });

  test("without MASTER_KEY, a restart on the same data folder keeps its key file, and its tokens", async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-page-tokens-"));
    try {
      const before = await startTestServer({ database: server().db, env: { DATA_DIR: dataDir } });
      const tokens = await Promise.all(TRANSPORTS.map((transport) => firstPage(before, transport, list)));
      await before.close();
      const after = await startTestServer({ database: server().db, env: { DATA_DIR: dataDir } });
      try {
        for (const [i, transport] of TRANSPORTS.entries()) {
          expect((await after.call(transport, list.method, { ...list.request, pageToken: tokens[i] }, list.who().token)).code).toBe(0);
          // The test file's own server has MASTER_KEY set: another key.
          expectRpcError(await server().call(transport, list.method, { ...list.request, pageToken: tokens[i] }, list.who().token), refused);
        }
      } finally {
        await after.close();
      }
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("an instance with another master key refuses it", async () => {
    const stranger = await start(randomBytes(32));
    try {
      for (const transport of TRANSPORTS) {
        const token = await firstPage(server(), transport, list);
        expectRpcError(await stranger.call(transport, list.method, { ...list.request, pageToken: token }, list.who().token), refused);
      }
    } finally {
      await stranger.close();
    }
  });

  test("after a rotation (MASTER_KEYS_PREVIOUS) tokens of the previous key still open, new ones use the new key", async () => {
    const newKey = randomBytes(32);
    const rotated = await start(newKey, MASTER_KEY);
    const onlyNew = await start(newKey);
    try {
      for (const transport of TRANSPORTS) {
        const old = await firstPage(server(), transport, list);
        expect((await rotated.call(transport, list.method, { ...list.request, pageToken: old }, list.who().token)).code).toBe(0);
        const minted = await firstPage(rotated, transport, list);
        expect((await onlyNew.call(transport, list.method, { ...list.request, pageToken: minted }, list.who().token)).code).toBe(0);
      }
    } finally {
      await rotated.close();
      await onlyNew.close();
    }
  });
});
