/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// No @vitejs/plugin-react: esbuild compiles JSX with the automatic runtime, which is all we need
// (no fast refresh in this project). Keeps the dependency tree small.
export default defineConfig({
  esbuild: { jsx: "automatic" },
  build: {
    outDir: "dist",
    sourcemap: false,
    // The polyfill is the only thing Vite could inline into index.html; without it the page has no
    // inline script at all, so a strict CSP (script-src 'self') works.
    modulePreload: { polyfill: false },
  },
  server: {
    // `npm run dev` proxies the API and the local OIDC issuer to a running `openkcm local up`.
    proxy: {
      "/v1": process.env.OPENKCM_API ?? "http://127.0.0.1:8080",
      "/oidc": process.env.OPENKCM_API ?? "http://127.0.0.1:8080",
    },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test-setup.ts"],
  },
});
