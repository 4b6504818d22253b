//! Reads `tauri.conf.json` and the capabilities, and embeds the pages of
//! `ui/` into the binary.

fn main() {
    tauri_build::build();
}
