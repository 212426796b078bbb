/**
 * The e2b error shapes. The control-plane REST API answers `{code: <HTTP status as an int>, message}` (the SDK reads "not
 * found" from the body's code, not from the status); envd's Connect-RPC answers `{code: <snake_case>, message}`. Both are
 * made from Cleanroom's own ApiError, so one registry of codes stays the source.
 */
import { ApiError, ERROR_CODES } from '../../../shared/errors.js';

/** E2bRestError is the body of an e2b REST error. */
export interface E2bRestError {
  code: number;
  message: string;
}

/** restError turns any error into the status and body of an e2b REST answer. */
export function restError(e: unknown): { status: number; body: E2bRestError } {
  if (e instanceof ApiError) {
    const status = ERROR_CODES[e.code].status;
    return { status, body: { code: status, message: e.message } };
  }
  const f = e as { statusCode?: number; message?: string };
  if (typeof f.statusCode === 'number' && f.statusCode >= 400 && f.statusCode < 500) return { status: f.statusCode, body: { code: f.statusCode, message: f.message ?? 'bad request' } };
  return { status: 500, body: { code: 500, message: 'internal error; the operator can find details in the control plane log' } };
}

/** ConnectCode is a Connect protocol error code (the SDK maps them to its error classes). */
export type ConnectCode = 'invalid_argument' | 'unauthenticated' | 'permission_denied' | 'not_found' | 'already_exists' | 'failed_precondition' | 'resource_exhausted' | 'unavailable' | 'unimplemented' | 'internal' | 'deadline_exceeded' | 'out_of_range';

/** ConnectError is an error answered in the Connect protocol. */
export class ConnectError extends Error {
  constructor(
    readonly code: ConnectCode,
    message: string,
  ) {
    super(message);
  }
}

/** CONNECT_STATUS is the HTTP status of a unary Connect error (connect-go's mapping). */
export const CONNECT_STATUS: Record<ConnectCode, number> = {
  invalid_argument: 400,
  out_of_range: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  already_exists: 409,
  failed_precondition: 412,
  resource_exhausted: 429,
  unimplemented: 501,
  internal: 500,
  unavailable: 503,
  deadline_exceeded: 504,
};

/** connectError maps a Cleanroom error to the Connect code the e2b SDK understands (FileNotFoundError, NotEnoughSpaceError, …). */
export function connectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  if (!(e instanceof ApiError)) return new ConnectError('internal', 'internal error; the operator can find details in the control plane log');
  const m = e.message;
  switch (e.code) {
    case 'not_found':
      return new ConnectError('not_found', m);
    case 'file_exists':
    case 'already_exists':
      return new ConnectError('already_exists', m);
    case 'invalid_request':
    case 'invalid_path':
    case 'invalid_json':
    case 'not_a_directory':
    case 'is_a_directory':
    case 'limit_exceeded':
    case 'process_start_failed':
      return new ConnectError('invalid_argument', m);
    case 'permission_denied':
    case 'forbidden':
      return new ConnectError('permission_denied', m);
    case 'unauthenticated':
      return new ConnectError('unauthenticated', m);
    case 'quota_exceeded':
    case 'rate_limited':
    case 'no_space':
      return new ConnectError('resource_exhausted', m);
    case 'sandbox_not_running':
    case 'process_ended':
    case 'conflict':
      return new ConnectError('failed_precondition', m);
    case 'unavailable':
      return new ConnectError('unavailable', m);
    default:
      return new ConnectError('internal', m);
  }
}
