/** The byte at position `i` of the thread test's stream: not periodic in 256, so a lost or doubled block shows. */
export function patternByte(i: number): number {
  return (i ^ (i >>> 8) ^ (i >>> 16) ^ 0x5a) & 0xff;
}
