// The window: asks the agent for its view every second and lays it out.
// All wording comes from the Rust side (src/view.rs).
"use strict";

const invoke = window.__TAURI__.core.invoke;
const $ = (id) => document.getElementById(id);
let paused = false;
// Bumped by every click: a view asked for before it is stale.
let clicks = 0;

function text(id, value) {
  $(id).textContent = value;
}

function render(v) {
  paused = v.paused;
  text("state", v.state);
  const toggle = $("toggle");
  toggle.disabled = false;
  toggle.textContent = v.paused ? "Resume" : "Pause";
  toggle.className = v.paused ? "resume" : "pause";
  const alert = $("alert");
  alert.hidden = !v.alert;
  alert.textContent = v.alert || "";
  if (v.current) {
    text("current-app", v.current.app);
    text("current-title", v.current.title);
    text("current-meta", v.current.activity + " for " + v.current.duration);
  } else {
    text("current-app", v.paused ? "Paused" : "Nothing yet");
    text("current-title", "");
    text("current-meta", "");
  }
  text("active", v.today.active);
  text("idle", v.today.idle);
  const list = $("categories");
  list.replaceChildren(
    ...v.today.categories.map((c) => {
      const li = document.createElement("li");
      const row = document.createElement("div");
      row.className = "row";
      const name = document.createElement("span");
      name.textContent = c.name;
      const time = document.createElement("span");
      time.textContent = c.time;
      row.append(name, time);
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = c.percent + "%";
      bar.append(fill);
      li.append(row, bar);
      return li;
    }),
  );
  text("policy", v.policy);
  text("upload", v.upload);
}

async function refresh() {
  const asked = clicks;
  try {
    const v = await invoke("view");
    if (asked === clicks) {
      render(v);
    }
  } catch (e) {
    text("state", "The agent does not answer: " + e);
  }
}

$("toggle").addEventListener("click", async () => {
  clicks += 1;
  $("toggle").disabled = true;
  try {
    await invoke("set_paused", { paused: !paused });
  } catch (e) {
    text("state", "Cannot switch: " + e);
  }
  await refresh();
});

// One view at a time: the next is asked for a second after the last came.
async function loop() {
  await refresh();
  setTimeout(loop, 1000);
}

loop();
