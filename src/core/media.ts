/** Image formats told apart by their first bytes; engines never trust a declared type. */
export interface ImageKind {
  format: 'png' | 'jpeg' | 'gif' | 'bmp' | 'webp' | 'tiff';
  mime: string;
  ext: string;
}

/** What remote vision and image APIs accept. */
export const WEB_IMAGE_FORMATS: ReadonlyArray<ImageKind['format']> = ['png', 'jpeg', 'gif', 'webp'];

export function sniffImage(b: Buffer): ImageKind | null {
  const ascii = (start: number, end: number) => b.toString('latin1', start, end);
  if (b.length >= 8 && b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    return { format: 'png', mime: 'image/png', ext: 'png' };
  }
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return { format: 'jpeg', mime: 'image/jpeg', ext: 'jpg' };
  if (b.length >= 6 && (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a')) return { format: 'gif', mime: 'image/gif', ext: 'gif' };
  if (b.length >= 26 && ascii(0, 2) === 'BM') return { format: 'bmp', mime: 'image/bmp', ext: 'bmp' };
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return { format: 'webp', mime: 'image/webp', ext: 'webp' };
  if (b.length >= 4 && (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*')) return { format: 'tiff', mime: 'image/tiff', ext: 'tiff' };
  return null;
}

/** A web image format (PNG, JPEG, GIF, WebP), or null. */
export function sniffWebImage(b: Buffer): ImageKind | null {
  const kind = sniffImage(b);
  return kind && WEB_IMAGE_FORMATS.includes(kind.format) ? kind : null;
}
