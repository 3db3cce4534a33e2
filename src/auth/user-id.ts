/** The user-id alphabet and length: a token's `sub`, and every field that names a user. */
const USER_ID = /^[A-Za-z0-9._:@|-]{1,128}$/;

export const USER_ID_MAX_CHARS = 128;
export const USER_ID_RULE = `1-${USER_ID_MAX_CHARS} characters of A-Z a-z 0-9 . _ : @ | -`;

export function isUserId(value: string): boolean {
  return USER_ID.test(value);
}
