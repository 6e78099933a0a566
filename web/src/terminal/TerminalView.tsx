/**
 * One xterm.js terminal bound to one attach socket (`sandbox.v2`, or raw with an older
 * server; see connection.ts). A snapshot replaces the screen (reset, then written), a
 * resume is written as it is, and neither is answered: input is gated until its write
 * callback. The fitted size goes to the server (v2: a resize control; raw: REST) so the
 * PTY matches the screen. A read-only viewer (a spectator) sends neither input nor size.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import { Terminal, type ITheme } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { Unicode11Addon } from "@xterm/addon-unicode11";
import "@xterm/xterm/css/xterm.css";
import { attachSocketUrl } from "./backoff";
import { AttachConnection, type ConnectionState, type StateDetail } from "./connection";
import { ReplayGate } from "./gate";
import type { Control } from "./protocol";
import { applyCtrl, rowKeySequence, type RowKey } from "./keys";
import { FONT_MAX, FONT_MIN, type TerminalPrefs } from "../hooks";

export interface TerminalSize {
  rows: number;
  cols: number;
}

interface TerminalViewProps {
  label: string;
  attachUrl: string;
  active: boolean;
  prefs: TerminalPrefs;
  onPrefs: (patch: Partial<TerminalPrefs>) => void;
  onResize: (size: TerminalSize) => Promise<void>;
  onConnectionState?: (state: ConnectionState, detail: StateDetail) => void;
  /** The session's primary terminal: after its agent exits, attaching again restarts it. */
  primary?: boolean;
  /** Offered once an extra terminal's process has exited. */
  onCloseTab?: () => void;
  /** A spectator's view: nothing typed or resized reaches the server. */
  readOnly?: boolean;
  /** v2 controls about the session: hello, viewers, activity, title, size, exit. */
  onControl?: (control: Control) => void;
}

const LIGHT: ITheme = {
  background: "#fbfbfc",
  foreground: "#1f2328",
  cursor: "#1f2328",
  cursorAccent: "#fbfbfc",
  selectionBackground: "#b6d3ff",
  black: "#24292f",
  red: "#cf222e",
  green: "#116329",
  yellow: "#8a6100",
  blue: "#0550ae",
  magenta: "#8250df",
  cyan: "#1b7c83",
  white: "#6e7781",
  brightBlack: "#57606a",
  brightRed: "#a40e26",
  brightGreen: "#1a7f37",
  brightYellow: "#7d4e00",
  brightBlue: "#0969da",
  brightMagenta: "#a475f9",
  brightCyan: "#3192aa",
  brightWhite: "#8c959f",
};

const DARK: ITheme = {
  background: "#0f1419",
  foreground: "#e6e8eb",
  cursor: "#e6e8eb",
  cursorAccent: "#0f1419",
  selectionBackground: "#264f78",
  black: "#484f58",
  red: "#ff7b72",
  green: "#3fb950",
  yellow: "#d29922",
  blue: "#58a6ff",
  magenta: "#bc8cff",
  cyan: "#39c5cf",
  white: "#b1bac4",
  brightBlack: "#6e7681",
  brightRed: "#ffa198",
  brightGreen: "#56d364",
  brightYellow: "#e3b341",
  brightBlue: "#79c0ff",
  brightMagenta: "#d2a8ff",
  brightCyan: "#56d4dd",
  brightWhite: "#f0f6fc",
};

function prefersDark(): boolean {
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ?? false;
}

const ROW_KEYS: { key: RowKey; label: string; aria: string }[] = [
  { key: "Esc", label: "Esc", aria: "Escape" },
  { key: "Tab", label: "Tab", aria: "Tab" },
  { key: "Left", label: "←", aria: "Arrow left" },
  { key: "Up", label: "↑", aria: "Arrow up" },
  { key: "Down", label: "↓", aria: "Arrow down" },
  { key: "Right", label: "→", aria: "Arrow right" },
];

const RESIZE_DEBOUNCE_MS = 150;

/** What the server's close reasons mean to a person. */
const REFUSAL_TEXT: Record<string, string> = {
  "share-revoked": "This share link was revoked by the session's owner.",
  "share-expired": "This share link has expired.",
  "token-expired": "Your sign-in has expired: reload the page to sign in again.",
  "signed-out": "You signed out: reload the page to sign in again.",
  unauthenticated: "You are not signed in: reload the page to sign in.",
  "sandbox-deleting": "This session is being deleted.",
};

/** Closes that a retry cannot fix, so the view offers no "Try again". */
export const FINAL_REASONS: ReadonlySet<string> = new Set(["share-revoked", "share-expired"]);

export function refusalText(detail: StateDetail): string {
  const known = detail.reason ? REFUSAL_TEXT[detail.reason] : undefined;
  return known ?? `Refused: ${detail.reason || `the server closed the terminal (${detail.code ?? "?"})`}`;
}

function describe(
  state: ConnectionState,
  retryInSeconds: number,
  detail: StateDetail,
  label: string,
): string {
  switch (state) {
    case "connecting":
      return "Connecting…";
    case "open":
      return "Connected";
    case "reconnecting":
      return retryInSeconds > 0 ? `reconnecting… (retry in ${retryInSeconds} s)` : "reconnecting…";
    case "ended":
      return detail.exitCode === undefined
        ? `${label} ended`
        : `${label} exited with code ${detail.exitCode}`;
    case "refused":
      return refusalText(detail);
  }
}

export default function TerminalView({
  label,
  attachUrl,
  active,
  prefs,
  onPrefs,
  onResize,
  onConnectionState,
  primary = false,
  onCloseTab,
  readOnly = false,
  onControl,
}: TerminalViewProps) {
  const hostRef = useRef<HTMLDivElement>(null);
  const termRef = useRef<Terminal | null>(null);
  const fitRef = useRef<FitAddon | null>(null);
  const connRef = useRef<AttachConnection | null>(null);
  const ctrlRef = useRef(false);
  const resizeRef = useRef(onResize);
  resizeRef.current = onResize;
  const stateCbRef = useRef(onConnectionState);
  stateCbRef.current = onConnectionState;
  const controlRef = useRef(onControl);
  controlRef.current = onControl;
  const readOnlyRef = useRef(readOnly);
  readOnlyRef.current = readOnly;
  // v2: the PTY's size as the server last said it (hello, size controls)
  const ptySizeRef = useRef<TerminalSize | null>(null);
  const [serverReadOnly, setServerReadOnly] = useState(false);
  const viewOnly = readOnly || serverReadOnly;
  const [ctrl, setCtrl] = useState(false);
  const [state, setState] = useState<ConnectionState>("connecting");
  const [retryIn, setRetryIn] = useState(0);
  const [detail, setDetail] = useState<StateDetail>({ attempt: 0, delayMs: 0 });

  // whether this connection's PTY has been told the screen's size (tests wait for it
  // before typing: a shell redraws its prompt when the size changes)
  const [sized, setSized] = useState(false);

  const sendSize = useCallback(() => {
    const term = termRef.current;
    const conn = connRef.current;
    // only an attached terminal has a PTY to resize (before that the server answers 404)
    if (!term || !conn?.isAttached) return;
    // a spectator never resizes the PTY: its screen shows the writer's size
    if (readOnlyRef.current || conn.readOnly) return;
    if (conn.isV2) {
      // v2: a control frame; the PTY has our size once the server says so (hello/size)
      const pty = ptySizeRef.current;
      if (pty && pty.rows === term.rows && pty.cols === term.cols) setSized(true);
      else conn.sendResize(term.rows, term.cols);
      return;
    }
    resizeRef.current({ rows: term.rows, cols: term.cols }).then(
      () => {
        if (connRef.current === conn && conn.isAttached) setSized(true);
      },
      () => {
        // the next resize or reconnect sends it again
      },
    );
  }, []);

  // A spectator's screen takes the PTY's size (it cannot change it): the server's
  // snapshot and output are laid out for that size, and a fitted screen of another
  // width would wrap them differently.
  const followPtyRef = useRef(readOnly);
  followPtyRef.current = readOnly || serverReadOnly;
  const fit = useCallback(() => {
    const pty = ptySizeRef.current;
    if (followPtyRef.current && pty && pty.rows > 0 && pty.cols > 0) {
      const term = termRef.current;
      if (term && (term.rows !== pty.rows || term.cols !== pty.cols)) term.resize(pty.cols, pty.rows);
      return;
    }
    const host = hostRef.current;
    if (!host || host.clientWidth === 0 || host.clientHeight === 0) return;
    try {
      fitRef.current?.fit();
    } catch {
      // not rendered yet
    }
  }, []);

  // Create the terminal and its socket once per attach URL.
  useEffect(() => {
    const host = hostRef.current;
    if (!host) return;
    const term = new Terminal({
      fontFamily:
        'ui-monospace, "SFMono-Regular", "JetBrains Mono", Menlo, Consolas, "Liberation Mono", monospace',
      fontSize: prefs.fontSize,
      cursorBlink: true,
      scrollback: 5000,
      theme: prefersDark() ? DARK : LIGHT,
      // the Unicode handling API is "proposed": needed for Unicode 11 widths below
      allowProposedApi: true,
    });
    // Unicode 11 widths (an emoji takes two cells), as the agents' own width tables and
    // the server's screen model count them: with xterm.js's default Unicode 6 a
    // snapshot's cursor would land a column off after every emoji.
    term.loadAddon(new Unicode11Addon());
    term.unicode.activeVersion = "11";
    const fitAddon = new FitAddon();
    term.loadAddon(fitAddon);
    term.open(host);
    termRef.current = term;
    fitRef.current = fitAddon;

    let resizeTimer: number | undefined;
    const resizeSub = term.onResize(() => {
      window.clearTimeout(resizeTimer);
      resizeTimer = window.setTimeout(sendSize, RESIZE_DEBOUNCE_MS);
    });

    // While a replay is being parsed, xterm.js answers the terminal queries in it (DA1,
    // OSC 11 colour, cursor position…) as if the program had just asked; the program
    // asked long ago and had its answer, so those replies must not be typed into it.
    const gate = new ReplayGate();
    // the server spoke sandbox.v2 on this socket (its `hello` came): its snapshots are
    // screen state, not replayed bytes
    const v2Ref = { current: false };
    const send = gate.guard((data: string) => {
      if (readOnlyRef.current) return;
      let out = data;
      if (ctrlRef.current) {
        out = applyCtrl(data);
        ctrlRef.current = false;
        setCtrl(false);
      }
      connRef.current?.send(out);
    });
    const dataSub = term.onData(send);
    const binarySub = term.onBinary(
      gate.guard((data: string) => {
        if (readOnlyRef.current) return;
        const bytes = new Uint8Array(data.length);
        for (let i = 0; i < data.length; i += 1) bytes[i] = data.charCodeAt(i) & 0xff;
        connRef.current?.send(bytes);
      }),
    );

    let countdown: number | undefined;
    const conn = new AttachConnection({
      url: attachSocketUrl(attachUrl, window.location),
      handlers: {
        onOutput: (data, kind, written) => {
          if (kind === "live") {
            term.write(data, written);
            return;
          }
          if (kind === "snapshot") term.reset();
          if (kind === "snapshot" && v2Ref.current) {
            // a sandbox.v2 snapshot is the server's screen state and never holds a
            // query, so nothing needs gating: keys typed while it is written (a resize
            // re-sends the screen) reach the agent
            term.write(data, written);
            return;
          }
          const done = gate.begin();
          // the callback runs once this frame is parsed, before any later frame is
          term.write(data, () => {
            done();
            written();
          });
        },
        onControl: (control) => {
          if (control.type === "hello") v2Ref.current = true;
          if (control.type === "hello" || control.type === "size") {
            ptySizeRef.current = { rows: control.rows, cols: control.cols };
            if (control.type === "hello") {
              setServerReadOnly(control.mode === "read");
              if (control.mode === "read") followPtyRef.current = true;
            }
            // before the snapshot that follows is written at this size
            if (followPtyRef.current) fit();
            const matches = control.rows === term.rows && control.cols === term.cols;
            // the PTY took our size (or a writer's: then ours goes again on the next fit)
            if (control.type === "size") setSized(matches);
          }
          controlRef.current?.(control);
        },
        onState: (next, detail) => {
          setState(next);
          if (next !== "open") {
            setSized(false);
            v2Ref.current = false; // the next socket says again what it speaks
          }
          if (next === "connecting") ptySizeRef.current = null;
          setDetail(detail);
          stateCbRef.current?.(next, detail);
          window.clearInterval(countdown);
          if (next === "reconnecting" && detail.delayMs > 0) {
            let left = Math.round(detail.delayMs / 1000);
            setRetryIn(left);
            countdown = window.setInterval(() => {
              left -= 1;
              setRetryIn(Math.max(0, left));
              if (left <= 0) window.clearInterval(countdown);
            }, 1000);
          } else {
            setRetryIn(0);
          }
          if (next === "open") {
            fit();
            // Posted once the attach has held a moment: a server that cannot start the
            // agent writes why as a frame and closes at once, and that terminal does not
            // exist to be resized.
            window.clearTimeout(resizeTimer);
            resizeTimer = window.setTimeout(sendSize, RESIZE_DEBOUNCE_MS);
          }
        },
      },
    });
    connRef.current = conn;
    fit();
    conn.start();

    const media = window.matchMedia?.("(prefers-color-scheme: dark)");
    const onScheme = () => {
      term.options.theme = prefersDark() ? DARK : LIGHT;
    };
    media?.addEventListener?.("change", onScheme);

    const observer =
      typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => fit());
    observer?.observe(host);

    return () => {
      observer?.disconnect();
      media?.removeEventListener?.("change", onScheme);
      window.clearTimeout(resizeTimer);
      window.clearInterval(countdown);
      resizeSub.dispose();
      dataSub.dispose();
      binarySub.dispose();
      conn.dispose();
      connRef.current = null;
      term.dispose();
      termRef.current = null;
      fitRef.current = null;
    };
    // prefs.fontSize is applied by the effect below; the terminal is not rebuilt for it.
  }, [attachUrl, fit, sendSize]);

  useEffect(() => {
    const term = termRef.current;
    if (!term) return;
    term.options.fontSize = prefs.fontSize;
    fit();
  }, [prefs.fontSize, fit]);

  useEffect(() => {
    const term = termRef.current;
    if (term) term.options.disableStdin = viewOnly;
  }, [viewOnly, attachUrl]);

  // The WebGL renderer is opt-in (Settings); the DOM renderer is the default.
  useEffect(() => {
    const term = termRef.current;
    if (!term || !prefs.webgl) return;
    let disposed = false;
    let addon: { dispose(): void } | null = null;
    import("@xterm/addon-webgl")
      .then(({ WebglAddon }) => {
        if (disposed) return;
        const webgl = new WebglAddon();
        webgl.onContextLoss(() => webgl.dispose());
        term.loadAddon(webgl);
        addon = webgl;
      })
      .catch(() => {
        // no WebGL here: the DOM renderer stays
      });
    return () => {
      disposed = true;
      addon?.dispose();
    };
  }, [prefs.webgl, attachUrl]);

  // A hidden tab has no size; fit and focus it when it becomes visible.
  useEffect(() => {
    if (!active) return;
    fit();
    termRef.current?.focus();
  }, [active, fit]);

  const pressRowKey = (key: RowKey) => {
    const term = termRef.current;
    if (!term || readOnlyRef.current) return;
    const seq = rowKeySequence(key, term.modes.applicationCursorKeysMode);
    ctrlRef.current = false;
    setCtrl(false);
    connRef.current?.send(seq);
    term.focus();
  };

  const toggleCtrl = () => {
    ctrlRef.current = !ctrlRef.current;
    setCtrl(ctrlRef.current);
    termRef.current?.focus();
  };

  // Keep the on-screen keyboard open: row buttons must not take focus from the terminal.
  const keepFocus = (ev: React.MouseEvent) => ev.preventDefault();

  return (
    <div
      className="terminal-pane"
      hidden={!active}
      data-connection={state}
      data-sized={sized ? "true" : "false"}
      data-readonly={viewOnly ? "true" : undefined}
    >
      <div className="terminal-frame">
        <div
          className="terminal-host"
          ref={hostRef}
          role="region"
          aria-label={`${label} terminal`}
          data-testid="sandbox-terminal"
        />
        {state !== "open" && (
          <div
            className={`terminal-status terminal-status-${state}`}
            role="status"
            aria-live="polite"
          >
            <span>{describe(state, retryIn, detail, label)}</span>
            {state === "reconnecting" && (
              <button
                type="button"
                className="btn btn-small"
                onClick={() => connRef.current?.reconnectNow()}
              >
                Reconnect now
              </button>
            )}
            {state === "refused" && !FINAL_REASONS.has(detail.reason ?? "") && (
              <button
                type="button"
                className="btn btn-small"
                onClick={() => connRef.current?.reconnectNow()}
              >
                Try again
              </button>
            )}
            {state === "ended" && primary && !viewOnly && (
              <button
                type="button"
                className="btn btn-small btn-primary"
                onClick={() => connRef.current?.reconnectNow()}
              >
                Restart agent
              </button>
            )}
            {state === "ended" && !primary && onCloseTab && (
              <button type="button" className="btn btn-small" onClick={onCloseTab}>
                Close tab
              </button>
            )}
          </div>
        )}
      </div>
      <div className="key-row" role="toolbar" aria-label="Terminal keys">
        <div className="key-row-keys" hidden={viewOnly}>
          {ROW_KEYS.slice(0, 2).map((k) => (
            <button
              key={k.key}
              type="button"
              className="key"
              aria-label={k.aria}
              onMouseDown={keepFocus}
              onClick={() => pressRowKey(k.key)}
            >
              {k.label}
            </button>
          ))}
          <button
            type="button"
            className="key"
            aria-pressed={ctrl}
            aria-label="Control (applies to the next key)"
            onMouseDown={keepFocus}
            onClick={toggleCtrl}
          >
            Ctrl
          </button>
          {ROW_KEYS.slice(2).map((k) => (
            <button
              key={k.key}
              type="button"
              className="key"
              aria-label={k.aria}
              onMouseDown={keepFocus}
              onClick={() => pressRowKey(k.key)}
            >
              {k.label}
            </button>
          ))}
        </div>
        <div className="font-controls" role="group" aria-label="Font size">
          <button
            type="button"
            className="key"
            aria-label="Smaller text"
            disabled={prefs.fontSize <= FONT_MIN}
            onMouseDown={keepFocus}
            onClick={() => onPrefs({ fontSize: prefs.fontSize - 1 })}
          >
            A−
          </button>
          <span className="font-size" aria-live="polite">
            {prefs.fontSize}px
          </span>
          <button
            type="button"
            className="key"
            aria-label="Larger text"
            disabled={prefs.fontSize >= FONT_MAX}
            onMouseDown={keepFocus}
            onClick={() => onPrefs({ fontSize: prefs.fontSize + 1 })}
          >
            A+
          </button>
        </div>
      </div>
    </div>
  );
}
