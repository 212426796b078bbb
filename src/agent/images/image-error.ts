/** ImageError is a refusal of an image the agent was asked to prepare, with the stable code the control plane reports. */

/** ImageErrorCode names why an image cannot be prepared (Contract B). */
export type ImageErrorCode = 'image_layer_invalid' | 'image_too_large' | 'image_digest_mismatch' | 'image_blob_missing';

/** ImageError carries an ImageErrorCode and a message that says what is wrong with the image (never a host path). */
export class ImageError extends Error {
  constructor(
    readonly code: ImageErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ImageError';
  }
}

/** invalidLayer is an image_layer_invalid refusal. */
export function invalidLayer(message: string): ImageError {
  return new ImageError('image_layer_invalid', message);
}
