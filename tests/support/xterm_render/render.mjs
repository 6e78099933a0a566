// Renders terminal output with the console's xterm.js (@xterm/headless, same major as
// web/'s @xterm/xterm) and prints the resulting screen as JSON: what a browser viewer
// would show and which input modes it would be in.
//
// stdin: {"cols": c, "rows": r, "scrollback": n?, "serialize": bool?,
//         "chunks": ["<base64 output>" | {"resize": [cols, rows]}, ...]}
// stdout: {"cols", "rows", "buffer": "normal"|"alternate", "cursor": {x, y, hidden, style,
//          blink}, "modes": {...terminal.modes, mouseEncoding}, "title", "scroll": [top,
//          bottom], "lines": [text per visible row], "cells": [[[chars, width, fg, bg,
//          flags], ...] per visible row], "replies": "<base64 of what xterm.js answered>",
//          "serialized": "<SerializeAddon output>"?}
// A colour is "d" (default), "p<n>" (palette index) or "#rrggbb"; flags are letters:
// b bold, d dim, i italic, u underline, k blink, r inverse, x invisible, s strikethrough,
// o overline.
import xtermHeadless from "@xterm/headless";
import serializeAddon from "@xterm/addon-serialize";
import unicode11Addon from "@xterm/addon-unicode11";

const { Terminal } = xtermHeadless;
const { SerializeAddon } = serializeAddon;
const { Unicode11Addon } = unicode11Addon;

function readStdin() {
  return new Promise((resolve, reject) => {
    const parts = [];
    process.stdin.on("data", (part) => parts.push(part));
    process.stdin.on("end", () => resolve(Buffer.concat(parts).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

function write(term, data) {
  return new Promise((resolve) => term.write(data, resolve));
}

function colour(mode, value, isDefault, isPalette) {
  if (isDefault) return "d";
  if (isPalette) return `p${value}`;
  return `#${value.toString(16).padStart(6, "0")}`;
}

function fg(cell) {
  return colour(cell.getFgColorMode(), cell.getFgColor(), cell.isFgDefault(), cell.isFgPalette());
}

function bg(cell) {
  return colour(cell.getBgColorMode(), cell.getBgColor(), cell.isBgDefault(), cell.isBgPalette());
}

function flags(cell) {
  let out = "";
  if (cell.isBold()) out += "b";
  if (cell.isDim()) out += "d";
  if (cell.isItalic()) out += "i";
  if (cell.isUnderline()) out += "u";
  if (cell.isBlink()) out += "k";
  if (cell.isInverse()) out += "r";
  if (cell.isInvisible()) out += "x";
  if (cell.isStrikethrough()) out += "s";
  if (cell.isOverline()) out += "o";
  return out;
}

async function main() {
  const job = JSON.parse(await readStdin());
  const term = new Terminal({
    cols: job.cols,
    rows: job.rows,
    scrollback: job.scrollback ?? 1000,
    allowProposedApi: true,
  });
  // the console's widths: Unicode 11 (web/src/terminal/TerminalView.tsx)
  term.loadAddon(new Unicode11Addon());
  term.unicode.activeVersion = "11";
  const serializer = new SerializeAddon();
  term.loadAddon(serializer);
  const replies = [];
  term.onData((data) => replies.push(Buffer.from(data, "binary")));
  term.onBinary((data) => replies.push(Buffer.from(data, "binary")));
  let title = "";
  term.onTitleChange((t) => (title = t));
  for (const chunk of job.chunks) {
    if (typeof chunk === "string") {
      await write(term, Buffer.from(chunk, "base64"));
    } else if (chunk.resize) {
      term.resize(chunk.resize[0], chunk.resize[1]);
    } else if (chunk.reset) {
      term.reset();
    }
  }
  await write(term, ""); // everything parsed

  const buffer = term.buffer.active;
  const core = term._core; // private: cursor visibility/style, mouse encoding, margins
  const cell = buffer.getNullCell();
  const lines = [];
  const cells = [];
  for (let y = 0; y < term.rows; y++) {
    const line = buffer.getLine(buffer.baseY + y);
    const row = [];
    for (let x = 0; x < term.cols; x++) {
      const c = line ? line.getCell(x, cell) : undefined;
      if (!c) {
        row.push([" ", 1, "d", "d", ""]);
        continue;
      }
      row.push([c.getChars() || (c.getWidth() === 0 ? "" : " "), c.getWidth(), fg(c), bg(c), flags(c)]);
    }
    cells.push(row);
    lines.push(line ? line.translateToString(true) : "");
  }
  const coreBuffer = core._bufferService.buffer;
  const out = {
    cols: term.cols,
    rows: term.rows,
    buffer: buffer.type,
    cursor: {
      x: buffer.cursorX,
      y: buffer.cursorY,
      hidden: Boolean(core.coreService.isCursorHidden),
      style: core.coreService.decPrivateModes.cursorStyle ?? null,
      blink: core.coreService.decPrivateModes.cursorBlink ?? null,
    },
    modes: { ...term.modes, mouseEncoding: core.coreMouseService.activeEncoding },
    title,
    scroll: [coreBuffer.scrollTop, coreBuffer.scrollBottom],
    lines,
    cells,
    replies: Buffer.concat(replies).toString("base64"),
  };
  if (job.serialize) out.serialized = serializer.serialize();
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(String(err?.stack ?? err));
  process.exit(1);
});
