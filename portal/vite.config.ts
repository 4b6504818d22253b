import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The gateway serves dist/ and gRPC-Web on the same origin, so the built
// files use relative paths and need no dev-server proxy.
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 800,
  },
});
