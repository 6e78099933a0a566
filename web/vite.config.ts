/// <reference types="vitest/config" />
// Build the console into the Python package so `sandbox serve` ships it; the dev server
// proxies the API (and the attach WebSockets) to a local `sandbox serve` on :8080.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const backend = process.env.SANDBOX_DEV_BACKEND ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "/sandbox/",
  plugins: [react()],
  build: {
    outDir: "../src/openova_sandbox/web/dist",
    emptyOutDir: true,
    sourcemap: false,
  },
  server: {
    proxy: {
      "/api": { target: backend, ws: true, changeOrigin: false },
      "/login": { target: backend },
    },
  },
  test: {
    environment: "jsdom",
    globals: true,
    setupFiles: ["./src/test/setup.ts"],
    // room for the 10 s condition waits (src/test/setup.ts) on a loaded machine
    testTimeout: 30_000,
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
