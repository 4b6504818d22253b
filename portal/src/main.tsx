import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { startSession } from "./api";
import "./styles.css";

// A reload keeps the session: the refresh cookie is exchanged for a new one.
void startSession();

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
