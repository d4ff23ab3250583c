'use strict';
/**
 * Code Actions JavaScript engine: the frame channel (engines/PROTOCOL.md). Encodes frames
 * (4-byte big-endian length, then JSON) and writes them on the private descriptor that
 * openFrameChannel takes from start.sh; nothing more once the end frame is out (sealed).
 */

const {
  jsonStringify,
  bufferFrom,
  bufferAllocUnsafe,
  openSync,
  closeSync,
  fstatSync,
  O_WRONLY,
  O_APPEND,
  writeAll,
} = require('./common.js');

const FRAME_FD = 3; // from start.sh: the container's stdout

let frameFd = 1;
let sealed = false; // the end frame is out: nothing more is written

function encodeFrame(frame) {
  const body = bufferFrom(jsonStringify(frame), 'utf8');
  const out = bufferAllocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 4);
  return out;
}

function writeFrame(bytes) {
  if (!sealed) writeAll(frameFd, bytes);
}

function send(frame) {
  writeFrame(encodeFrame(frame));
}

/** Whether the end frame is out (then nothing more is written). */
function isSealed() {
  return sealed;
}

function setSealed(value) {
  sealed = value;
}

/** The descriptor frames go to (1 when there is no other: see Capture.startMemory). */
function frameChannelFd() {
  return frameFd;
}

/**
 * Take the container's stdout (fd 3 from start.sh, else fd 1) and, when it is a pipe, reopen
 * it as a new close-on-exec descriptor so that child processes of the user code do not inherit
 * it. Docker hands the container pipes owned by its user, so the reopen works as nobody.
 */
function openFrameChannel() {
  let fd = 1;
  try {
    fstatSync(FRAME_FD);
    fd = FRAME_FD;
  } catch {
    // started without start.sh
  }
  try {
    if (fstatSync(fd).isFIFO()) {
      const reopened = openSync(`/proc/self/fd/${fd}`, O_WRONLY | O_APPEND);
      if (fd === FRAME_FD) closeSync(FRAME_FD);
      fd = reopened;
    }
  } catch {
    // keep the inherited descriptor
  }
  frameFd = fd;
}

module.exports = {
  encodeFrame,
  writeFrame,
  send,
  isSealed,
  setSealed,
  frameChannelFd,
  openFrameChannel,
};
