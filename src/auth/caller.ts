import { accessDenied, invalidArgument } from "../errors";
import { isUserId, USER_ID_RULE } from "./user-id";

export const ROLES = ["user", "service", "admin"] as const;
export type Role = (typeof ROLES)[number];

/** Who is calling, as proven by a verified token. Never built from a request field. */
export interface Caller {
  readonly userId: string;
  readonly roles: readonly Role[];
  /** Service and admin callers act for any user. */
  readonly privileged: boolean;
}

export function makeCaller(userId: string, roles: readonly Role[]): Caller {
  return Object.freeze({
    userId,
    roles: Object.freeze([...roles]),
    privileged: roles.includes("service") || roles.includes("admin"),
  });
}

export const hasRole = (caller: Caller, role: Role) => caller.roles.includes(role);

/**
 * The user a request acts for: a user may omit `userId` (it is then themselves) and may name
 * only themselves; service and admin callers must name the user.
 */
export function resolveTargetUser(caller: Caller, requested: string | undefined, field = "userId"): string {
  if (requested === undefined || requested === "") {
    if (caller.privileged) throw invalidArgument(field, "is required for service and admin callers");
    return caller.userId;
  }
  if (!isUserId(requested)) {
    throw invalidArgument(field, `must be ${USER_ID_RULE}`);
  }
  if (!caller.privileged && requested !== caller.userId) {
    throw accessDenied(`caller may not act for user ${requested}`, { field, userId: requested });
  }
  return requested;
}
