import test from 'ava';
import { ConfigError } from '../../../../lib/errors.js';
import {
  I8042, I8042_CMD_AUX_DISABLE, I8042_CMD_AUX_ENABLE, I8042_CMD_CTL_RCTR, I8042_CMD_CTL_TEST, I8042_CMD_CTL_WCTR,
  I8042_CMD_KBD_DISABLE, I8042_CMD_KBD_ENABLE, I8042_CMD_KBD_LOOP, I8042_CMD_KBD_TEST, I8042_CMD_READ_OUTPUT_PORT,
  I8042_CMD_RESET, I8042_CMD_WRITE_OUTPUT_PORT, I8042_COMMAND, I8042_CTR_AUXDIS, I8042_CTR_KBDDIS, I8042_CTR_KBDINT,
  I8042_CTR_SYSFLAG, I8042_CTR_XLATE, I8042_DATA, I8042_OUTPUT_PORT_A20, I8042_OUTPUT_PORT_RESET,
  I8042_RET_CTL_TEST, I8042_STR_CMDDAT, I8042_STR_IBF, I8042_STR_OBF, I8042_STR_SYSFLAG,
} from '../../../../devices/legacy/i8042.js';

function make(state = I8042.createState()) {
  const calls = { reset: 0 };
  const dev = new I8042(state, { onReset: () => calls.reset++ });
  return {
    dev,
    calls,
    status: () => dev.read(I8042_COMMAND, 1),
    data: () => dev.read(I8042_DATA, 1),
    cmd: (v: number) => dev.write(I8042_COMMAND, 1, v),
    put: (v: number) => dev.write(I8042_DATA, 1, v),
  };
}

test('Linux reboot=k: wait for IBF clear, write 0xFE ten times, onReset runs exactly once', (t) => {
  const { calls, status, cmd, dev } = make();
  t.false(dev.resetRequested);
  for (let i = 0; i < 10; i++) {
    t.is(status() & I8042_STR_IBF, 0, 'input buffer always empty');
    cmd(I8042_CMD_RESET);
  }
  t.is(calls.reset, 1);
  t.true(dev.resetRequested);
});

test('reset is latched in shared state: instances on two vCPUs reset once between them', (t) => {
  const state = I8042.createState();
  const x = make(state);
  const y = make(state);
  x.cmd(I8042_CMD_RESET);
  y.cmd(I8042_CMD_RESET);
  t.is(x.calls.reset, 1);
  t.is(y.calls.reset, 0);
  t.true(y.dev.resetRequested);
});

test('other ways to pulse the reset line: 0xF0-0xFF with bit 0 clear, and 0xD1 with bit 0 clear', (t) => {
  const harmless = make();
  harmless.cmd(0xff); // pulses nothing
  t.is(harmless.calls.reset, 0);
  const pulse = make();
  pulse.cmd(0xf0);
  t.is(pulse.calls.reset, 1);
  const outPort = make();
  outPort.cmd(I8042_CMD_WRITE_OUTPUT_PORT);
  outPort.put(I8042_OUTPUT_PORT_A20 | I8042_OUTPUT_PORT_RESET);
  t.is(outPort.calls.reset, 0, 'A20 gate write (0xD1 0x03) does not reset');
  outPort.cmd(I8042_CMD_READ_OUTPUT_PORT);
  t.is(outPort.data(), I8042_OUTPUT_PORT_A20 | I8042_OUTPUT_PORT_RESET);
  outPort.cmd(I8042_CMD_WRITE_OUTPUT_PORT);
  outPort.put(I8042_OUTPUT_PORT_A20);
  t.is(outPort.calls.reset, 1);
});

test('status register: OBF follows the output buffer, CMD/DATA follows the last write', (t) => {
  const { status, data, cmd, put } = make();
  t.is(status() & (I8042_STR_OBF | I8042_STR_IBF), 0);
  t.truthy(status() & I8042_STR_SYSFLAG);
  cmd(I8042_CMD_KBD_TEST);
  t.truthy(status() & I8042_STR_CMDDAT);
  t.truthy(status() & I8042_STR_OBF);
  t.is(data(), 0x00);
  t.is(status() & I8042_STR_OBF, 0, 'reading the data port empties it');
  cmd(I8042_CMD_KBD_LOOP);
  put(0x42);
  t.is(status() & I8042_STR_CMDDAT, 0);
  t.truthy(status() & I8042_STR_OBF);
  t.is(data(), 0x42, '0xD2 echoes the next data byte');
});

test('command byte: 0x20 reads, 0x60 writes, 0xA7/0xA8/0xAD/0xAE flip the disable bits', (t) => {
  const { status, data, cmd, put } = make();
  cmd(I8042_CMD_CTL_RCTR);
  t.is(data(), I8042_CTR_KBDINT | I8042_CTR_SYSFLAG | I8042_CTR_XLATE);
  cmd(I8042_CMD_CTL_WCTR);
  put(I8042_CTR_XLATE);
  t.is(status() & I8042_STR_SYSFLAG, 0, 'status system flag follows the command byte');
  cmd(I8042_CMD_CTL_RCTR);
  t.is(data(), I8042_CTR_XLATE);
  cmd(I8042_CMD_AUX_DISABLE);
  cmd(I8042_CMD_KBD_DISABLE);
  cmd(I8042_CMD_CTL_RCTR);
  t.is(data(), I8042_CTR_XLATE | I8042_CTR_AUXDIS | I8042_CTR_KBDDIS);
  cmd(I8042_CMD_AUX_ENABLE);
  cmd(I8042_CMD_KBD_ENABLE);
  cmd(I8042_CMD_CTL_RCTR);
  t.is(data(), I8042_CTR_XLATE);
  cmd(I8042_CMD_CTL_TEST);
  t.is(data(), I8042_RET_CTL_TEST);
  t.truthy(status() & I8042_STR_SYSFLAG, 'self test sets the system flag');
});

test('a command cancels a pending data phase; stray data and unknown commands are harmless', (t) => {
  const { dev, data, cmd, put, status, calls } = make();
  cmd(I8042_CMD_CTL_WCTR);
  cmd(I8042_CMD_CTL_RCTR); // new command: the 0x60 data phase is dropped
  put(0x00); // goes to the (absent) keyboard
  t.is(data(), I8042_CTR_KBDINT | I8042_CTR_SYSFLAG | I8042_CTR_XLATE);
  cmd(0xa9); // AUX test: no AUX port, no answer
  cmd(0xd4);
  put(0xff);
  t.is(status() & I8042_STR_OBF, 0);
  t.is(dev.read(2, 1), 0xff, 'offsets 1-3 are not ours');
  t.notThrows(() => {
    dev.write(1, 1, 0xfe);
    dev.write(I8042_COMMAND, 4, 0x1234_56a7);
    dev.write(Number.NaN, 1, Number.NaN);
  });
  cmd(I8042_CMD_CTL_RCTR);
  t.is(data() & I8042_CTR_AUXDIS, I8042_CTR_AUXDIS, 'a 4-byte write used its low byte (0xA7)');
  t.is(calls.reset, 0, 'a write to offset 1 is not a command');
});

test('dataPort and commandPort are one-port views of the same controller', (t) => {
  const { dev, calls } = make();
  dev.commandPort.write(0, 1, I8042_CMD_CTL_TEST);
  t.is(dev.commandPort.read(0, 1) & I8042_STR_OBF, I8042_STR_OBF);
  t.is(dev.dataPort.read(0, 1), I8042_RET_CTL_TEST);
  dev.commandPort.write(0, 1, I8042_CMD_RESET);
  t.is(calls.reset, 1);
});

test('constructor rejects foreign buffers', (t) => {
  t.throws(() => new I8042(new SharedArrayBuffer(I8042.STATE_BYTES), { onReset: () => {} }), { instanceOf: ConfigError });
});
