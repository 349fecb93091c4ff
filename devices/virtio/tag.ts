/** Mount tags of the share devices (virtio-9p, virtio-fs): checked by config validation and by the devices. */

/** The tag's UTF-8 bytes; a RangeError when it is empty, longer than `maxBytes`, or has whitespace or controls. */
export function mountTagBytes(tag: string, maxBytes: number): Uint8Array {
  if (typeof tag !== 'string') throw new RangeError('mount tag must be a string');
  const bytes = new TextEncoder().encode(tag);
  if (bytes.length === 0 || bytes.length > maxBytes) throw new RangeError(`mount tag '${tag}' is ${bytes.length} bytes; it must be 1 to ${maxBytes}`);
  // NUL would cut the tag short in the guest; whitespace and controls cannot be typed into mount(8) or shown in /proc/mounts.
  if (/[\s\p{Cc}]/u.test(tag)) throw new RangeError(`mount tag ${JSON.stringify(tag)} has whitespace or control characters`);
  return bytes;
}
