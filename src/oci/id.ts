// Container ids become directory names under --root and appear in cgroup paths, so they are held to
// runc's rule (libcontainer: ^[\w+-\.]+$, not "." or "..", at most 1024 bytes).

const ID_PATTERN = /^[A-Za-z0-9_+.-]+$/;
export const MAX_ID_LENGTH = 1024;

/** Throws when `id` is not a valid container id; returns it otherwise. */
export function validateContainerId(id: string): string {
  const bad = (why: string): never => {
    throw new Error(`invalid container id ${JSON.stringify(id)}: ${why}`);
  };
  if (id === "") bad("must not be empty");
  if (id.includes("/")) bad("must not contain '/'");
  if (id === "." || id === "..") bad("must not be '.' or '..'");
  if (id.length > MAX_ID_LENGTH) bad(`longer than ${MAX_ID_LENGTH} characters`);
  if (!ID_PATTERN.test(id)) bad("only letters, digits, '_', '+', '-' and '.' are allowed");
  return id;
}
