/** Small shared React hooks: polling with a fixed period, and the persisted preferences. */
import { useEffect, useRef, useState } from "react";

/** Calls `tick` now and then every `periodMs` until `enabled` turns false or unmount. */
export function usePolling(tick: () => Promise<void> | void, periodMs: number, enabled = true) {
  const tickRef = useRef(tick);
  tickRef.current = tick;
  useEffect(() => {
    if (!enabled) return;
    let stopped = false;
    let timer: number | undefined;
    const run = async () => {
      try {
        await tickRef.current();
      } finally {
        if (!stopped) timer = window.setTimeout(run, periodMs);
      }
    };
    void run();
    return () => {
      stopped = true;
      if (timer !== undefined) window.clearTimeout(timer);
    };
  }, [periodMs, enabled]);
}

export interface TerminalPrefs {
  fontSize: number;
  webgl: boolean;
}

const PREFS_KEY = "openova-sandbox.terminal";
export const FONT_MIN = 10;
export const FONT_MAX = 24;

function clampFont(size: number): number {
  return Math.min(FONT_MAX, Math.max(FONT_MIN, Math.round(size)));
}

export function defaultFontSize(): number {
  return window.matchMedia?.("(max-width: 600px)").matches ? 12 : 14;
}

export function loadPrefs(): TerminalPrefs {
  const fallback = { fontSize: defaultFontSize(), webgl: false };
  try {
    const raw = window.localStorage.getItem(PREFS_KEY);
    if (!raw) return fallback;
    const parsed = JSON.parse(raw) as Partial<TerminalPrefs>;
    return {
      fontSize: typeof parsed.fontSize === "number" ? clampFont(parsed.fontSize) : fallback.fontSize,
      webgl: parsed.webgl === true,
    };
  } catch {
    return fallback;
  }
}

export function usePrefs(): [TerminalPrefs, (patch: Partial<TerminalPrefs>) => void] {
  const [prefs, setPrefs] = useState(loadPrefs);
  const update = (patch: Partial<TerminalPrefs>) => {
    setPrefs((old) => {
      const next = { ...old, ...patch };
      next.fontSize = clampFont(next.fontSize);
      try {
        window.localStorage.setItem(PREFS_KEY, JSON.stringify(next));
      } catch {
        // private mode: keep it for this page only
      }
      return next;
    });
  };
  return [prefs, update];
}

/**
 * While a terminal is on screen, pin the app to the *visual* viewport's height, so an
 * on-screen keyboard shrinks the terminal instead of covering it (`100dvh` ignores it).
 */
export function useTerminalLayout(enabled: boolean) {
  useEffect(() => {
    if (!enabled) return;
    const root = document.documentElement;
    const vv = window.visualViewport;
    const update = () => {
      if (vv) root.style.setProperty("--app-height", `${Math.round(vv.height)}px`);
    };
    update();
    document.body.classList.add("terminal-mode");
    vv?.addEventListener("resize", update);
    return () => {
      vv?.removeEventListener("resize", update);
      document.body.classList.remove("terminal-mode");
      root.style.removeProperty("--app-height");
    };
  }, [enabled]);
}

/** The tab's title names the page, so a row of sandbox tabs can be told apart. */
export function useTitle(title: string) {
  useEffect(() => {
    document.title = title ? `${title} · OpenOva Sandbox` : "OpenOva Sandbox";
  }, [title]);
}
