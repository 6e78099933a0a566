import "@testing-library/jest-dom/vitest";
import { cleanup, configure } from "@testing-library/react";
import { afterEach } from "vitest";

// findBy*/waitFor wait for a condition; on a loaded CI machine a lazy chunk or a fake
// server answer can take well over Testing Library's default 1 s (docs/testing.md).
configure({ asyncUtilTimeout: 10_000 });

afterEach(() => {
  cleanup();
  if (typeof window !== "undefined") window.localStorage.clear();
});
