// gRPC status codes as ttrpc carries them (google.rpc.Status in every Response), and the one error type
// of this package: a TtrpcError is a status (code + one-line message) a handler throws or a call rejects
// with. Mapping a thrown value to a status follows Go ttrpc's server: a gRPC status keeps its code,
// anything else is UNKNOWN with the error's text.
import { KataError, oneLine } from "../errors";

/** google.rpc.Code. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type CodeNumber = (typeof Code)[keyof typeof Code];

const NAMES = Object.fromEntries(Object.entries(Code).map(([k, v]) => [v, k])) as Record<number, string>;

/** "NOT_FOUND" for 5; "code 99" for a number outside google.rpc.Code. */
export function codeName(code: number): string {
  return NAMES[code] ?? `code ${code}`;
}

export function isCode(n: unknown): n is CodeNumber {
  return typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 16;
}

/** google.protobuf.Any as ttrpc's Response carries it in google.rpc.Status.details. */
export interface StatusDetail {
  type_url: string;
  value: Uint8Array;
}

/** A ttrpc status that is not OK: thrown by handlers, rejected by TtrpcClient.call. */
export class TtrpcError extends KataError {
  constructor(
    readonly code: number,
    message: string,
    readonly details: StatusDetail[] = [],
  ) {
    super(oneLine(message, "; "));
  }
}

/** The status a thrown value answers with: its own gRPC `code` (a number 1..16), else UNKNOWN. */
export function statusOf(err: unknown): { code: number; message: string } {
  const code = (err as { code?: unknown } | null)?.code;
  const message = oneLine(err instanceof Error ? err.message || err.name : err, "; ");
  return { code: isCode(code) && code !== Code.OK ? code : Code.UNKNOWN, message };
}

/** Go ttrpc's wording for a message over the 4 MiB limit (channel.go). */
export function oversizedMessage(length: number, max: number): TtrpcError {
  return new TtrpcError(
    Code.RESOURCE_EXHAUSTED,
    `message length ${length} exceed maximum message size of ${max}`,
  );
}
