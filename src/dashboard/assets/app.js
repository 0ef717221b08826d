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

  // Every stream this page holds. A page kept in the back/forward cache would keep
  // them open, and a browser opens at most six connections to one host: a few
  // pages later a new stream waits (a minute, measured). So they are closed when
  // the page is hidden, and a page shown again from that cache is reloaded.
  const sources = [];
  const stream = (url) => { const es = new EventSource(url); sources.push(es); return es; };
  window.addEventListener("pagehide", () => { for (const es of sources) es.close(); });
  window.addEventListener("pageshow", (ev) => { if (ev.persisted) location.reload(); });

  // Live updates: each event replaces one element's content by id.
  const source = main.dataset.live ? stream(main.dataset.live) : null;
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

  // Step logs: followed while open; the last PAGE lines drawn, earlier ones on
  // request (a long log stays fast); search filters; each line has a link.
  const PAGE = 1000;
  function viewer(d) {
    const pre = d.querySelector(".log-lines");
    const count = d.querySelector(".log-count");
    const state = d.querySelector(".log-state");
    const search = d.querySelector(".log-search");
    const more = d.querySelector(".log-all");
    const step = d.dataset.step;
    const lines = [];
    let shown = PAGE;
    let queued = false;
    const id = (n) => "L-" + step + "-" + n;

    function line(n) {
      const s = document.createElement("span");
      s.className = "line";
      s.id = id(n);
      const a = document.createElement("a");
      a.className = "ln";
      a.href = "#" + id(n);
      a.textContent = String(n);
      s.appendChild(a);
      s.appendChild(document.createTextNode(lines[n - 1] + "\n"));
      return s;
    }
    function draw() {
      queued = false;
      const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
      const q = search.value.toLowerCase();
      const picked = [];
      for (let i = lines.length; i >= 1 && picked.length < shown; i--) {
        if (!q || lines[i - 1].toLowerCase().includes(q)) picked.push(i);
      }
      const frag = document.createDocumentFragment();
      for (let k = picked.length - 1; k >= 0; k--) frag.appendChild(line(picked[k]));
      pre.replaceChildren(frag);
      count.textContent = "(" + lines.length + " lines)";
      more.hidden = picked.length < shown;
      if (q) state.textContent = picked.length + " matching lines shown";
      if (atEnd) pre.scrollTop = pre.scrollHeight;
      const target = location.hash.slice(1);
      if (target.startsWith("L-" + step + "-")) {
        const el = document.getElementById(target);
        if (el) el.scrollIntoView({ block: "center" });
      }
    }
    const later = () => { if (!queued) { queued = true; requestAnimationFrame(draw); } };
    search.addEventListener("input", later);
    more.addEventListener("click", () => { shown += PAGE; later(); });
    more.textContent = "Show " + PAGE + " earlier lines";

    const es = stream(d.dataset.logSrc);
    const add = (ev) => { for (const l of JSON.parse(ev.data)) lines.push(l); later(); };
    es.addEventListener("lines", add);
    es.addEventListener("end", (ev) => { add(ev); es.close(); state.textContent = "ended"; d.dataset.ended = "true"; });
    es.addEventListener("failed", (ev) => { es.close(); state.textContent = JSON.parse(ev.data); });
    es.onopen = () => { state.textContent = "following"; };
  }
  for (const d of document.querySelectorAll("details.log")) {
    d.addEventListener("toggle", () => {
      if (d.open && !d.dataset.started) { d.dataset.started = "true"; viewer(d); }
    });
    const m = location.hash.match(/^#L-(.+)-\d+$/);
    if (m && m[1] === d.dataset.step) d.open = true;
  }
})();
