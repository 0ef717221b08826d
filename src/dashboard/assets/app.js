// Baton dashboard: live fragments over server-sent events, and the buttons.
// No framework: the server renders every fragment; this swaps them in.
"use strict";
(function () {
  const token = document.querySelector('meta[name="baton-token"]').content;
  const main = document.getElementById("main");
  const conn = document.getElementById("conn");
  const toast = document.getElementById("toast");

  function say(text, bad) {
    const p = document.createElement("p");
    p.textContent = text;
    if (bad) p.className = "bad";
    toast.appendChild(p);
    setTimeout(() => p.remove(), bad ? 10000 : 4000);
  }

  // Live updates: each event replaces one element's content by id.
  const source = main.dataset.live ? new EventSource(main.dataset.live) : null;
  if (source) {
    source.addEventListener("fragment", (ev) => {
      const f = JSON.parse(ev.data);
      const el = document.getElementById(f.id);
      if (el) el.innerHTML = f.html;
      document.body.dataset.updated = String(Date.now());
    });
    source.onopen = () => { conn.textContent = "live"; };
    source.onerror = () => { conn.textContent = "reconnecting…"; };
  }

  // Buttons: POST with the page's token; the lists update from the watch.
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b) return;
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    try {
      const res = await fetch(b.dataset.action, {
        method: "POST",
        headers: { "X-Baton-Token": token },
        credentials: "same-origin",
      });
      const body = await res.json().catch(() => ({}));
      say(body.message || res.statusText, !res.ok);
    } catch (e) {
      say(String(e), true);
    } finally {
      b.disabled = false;
    }
  });
})();
