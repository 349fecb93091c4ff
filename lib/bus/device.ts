/**
 * A device on the PIO or MMIO bus. `offset` is relative to the device's base
 * address; `size` is the access width in bytes (1, 2, 4 or 8). Called on the
 * vCPU worker that took the exit, so it must be quick and must never throw
 * because of guest values: a bad access is ignored (writes) or reads as all-ones.
 */
export interface BusDevice {
  read(offset: number, size: number): number;
  write(offset: number, size: number, value: number): void;
}
