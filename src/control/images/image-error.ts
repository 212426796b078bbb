/** ImageImportError is why an import failed, with a stable code (shared/errors.ts) that the image's state carries. */
import type { ErrorCode } from '../../shared/errors.js';

/** ImageFailureCode is a code an import (or an agent's preparation) can fail with. */
export type ImageFailureCode = Extract<
  ErrorCode,
  | 'image_registry_unreachable'
  | 'image_tls_failed'
  | 'image_auth_failed'
  | 'image_not_found'
  | 'image_digest_mismatch'
  | 'image_platform_mismatch'
  | 'image_invalid'
  | 'image_too_large'
  | 'image_import_timeout'
  | 'quota_exceeded'
  | 'internal'
>;

/** ImageImportError carries a failure code and a message that says what to fix. */
export class ImageImportError extends Error {
  constructor(
    readonly code: ImageFailureCode,
    message: string,
  ) {
    super(message);
  }
}

/** failureOf turns anything thrown during an import into a code and a message (unknown faults are `internal`). */
export function failureOf(e: unknown): { code: string; message: string } {
  if (e instanceof ImageImportError) return { code: e.code, message: e.message.slice(0, 4000) };
  return { code: 'internal', message: `the import failed: ${((e as Error).message ?? String(e)).slice(0, 2000)}` };
}
