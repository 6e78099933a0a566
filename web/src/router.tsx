/**
 * A handful of routes do not justify a routing library: this maps `location.pathname` under
 * `/sandbox` to a route and keeps it in sync with the History API.
 */
import { useEffect, useState, type AnchorHTMLAttributes, type MouseEvent } from "react";

export const BASE = "/sandbox";

export type Route =
  | { name: "landing" }
  | { name: "settings" }
  | { name: "usage" }
  | { name: "admin" }
  | { name: "session"; id: string }
  | { name: "notFound" };

export function parseRoute(pathname: string): Route {
  const trimmed = pathname.replace(/\/+$/, "");
  if (trimmed === BASE || trimmed === "" || trimmed === `${BASE}/index.html`) {
    return { name: "landing" };
  }
  if (!trimmed.startsWith(`${BASE}/`)) return { name: "notFound" };
  const rest = trimmed.slice(BASE.length + 1);
  if (rest === "settings") return { name: "settings" };
  if (rest === "usage") return { name: "usage" };
  if (rest === "admin") return { name: "admin" };
  if (/^[^/]+$/.test(rest)) return { name: "session", id: decodeURIComponent(rest) };
  return { name: "notFound" };
}

const NAVIGATE_EVENT = "sandbox:navigate";

export function navigate(to: string, options: { replace?: boolean } = {}): void {
  if (options.replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  window.dispatchEvent(new Event(NAVIGATE_EVENT));
}

export function useLocationPath(): string {
  const [path, setPath] = useState(() => window.location.pathname);
  useEffect(() => {
    const update = () => setPath(window.location.pathname);
    window.addEventListener("popstate", update);
    window.addEventListener(NAVIGATE_EVENT, update);
    return () => {
      window.removeEventListener("popstate", update);
      window.removeEventListener(NAVIGATE_EVENT, update);
    };
  }, []);
  return path;
}

export function sessionPath(id: string): string {
  return `${BASE}/${encodeURIComponent(id)}`;
}

/** An ordinary link (middle-click and copy still work) that navigates in-app on a plain click. */
export function Link({
  href,
  onClick,
  ...rest
}: AnchorHTMLAttributes<HTMLAnchorElement> & { href: string }) {
  const handle = (ev: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(ev);
    if (ev.defaultPrevented || ev.button !== 0) return;
    if (ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    ev.preventDefault();
    navigate(href);
  };
  return <a href={href} onClick={handle} {...rest} />;
}
