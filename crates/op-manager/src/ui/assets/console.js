// op-agent console: the little the pages need beyond HTML. No framework, no external fetch.
// - <time datetime> becomes local time with a relative part ("5 s ago"), kept fresh;
// - elements with an id and data-refresh="MS" are re-fetched and replaced in place;
// - forms with data-confirm ask first; the job editor validates as you type;
// - package uploads stream the file with the CSRF header; run output is followed live.
"use strict";
(function () {
  const csrf = () => {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  };
  const pad = (n) => String(n).padStart(2, "0");
  const local = (d) =>
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  function relative(ms) {
    const future = ms < 0;
    let s = Math.round(Math.abs(ms) / 1000);
    let text;
    if (s < 60) text = `${s} s`;
    else if (s < 3600) text = `${Math.floor(s / 60)} min`;
    else if (s < 86400) text = `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    else text = `${Math.floor(s / 86400)} d`;
    return future ? `in ${text}` : `${text} ago`;
  }
  function times(root) {
    const now = Date.now();
    root.querySelectorAll("time[datetime]").forEach((t) => {
      const d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) return;
      t.textContent = `${local(d)} (${relative(now - d.getTime())})`;
      t.title = d.toString();
    });
  }

  // In-place refresh of live regions.
  function refresher(el) {
    const every = parseInt(el.dataset.refresh, 10);
    if (!el.id || !(every > 0)) return;
    let busy = false;
    const timer = setInterval(async () => {
      if (busy || document.hidden) return;
      // Never clobber what the user is typing or choosing.
      if (el.contains(document.activeElement) && document.activeElement !== document.body) return;
      busy = true;
      try {
        const r = await fetch(location.href, { credentials: "same-origin", headers: { "x-console-refresh": "1" } });
        if (!r.ok) return;
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        const fresh = doc.getElementById(el.id);
        if (!fresh) return;
        el.innerHTML = fresh.innerHTML;
        el.dataset.refreshedAt = String(Date.now());
        times(el);
        wire(el);
        if (!fresh.hasAttribute("data-refresh")) {
          el.removeAttribute("data-refresh");
          clearInterval(timer);
        }
      } catch (e) {
        // The manager may be restarting; the next tick tries again.
      } finally {
        busy = false;
      }
    }, every);
  }

  function wire(root) {
    root.querySelectorAll("form[data-confirm]").forEach((f) => {
      if (f.dataset.wired) return;
      f.dataset.wired = "1";
      f.addEventListener("submit", (e) => {
        if (!window.confirm(f.dataset.confirm)) e.preventDefault();
      });
    });
  }

  // The job editor: validate with the manager's parser while typing.
  function editor(area) {
    const out = document.getElementById("editor-errors");
    const fires = document.getElementById("editor-fires");
    let timer = null;
    let seq = 0;
    const check = async () => {
      const mine = ++seq;
      try {
        const r = await fetch(area.dataset.validate, {
          method: "POST",
          credentials: "same-origin",
          headers: { "x-csrf-token": csrf(), "content-type": "text/plain; charset=utf-8" },
          body: area.value,
        });
        if (mine !== seq || !r.ok) return;
        const v = await r.json();
        out.textContent = "";
        if (v.ok) {
          area.removeAttribute("aria-invalid");
          fires.textContent = v.next_fires.length
            ? "Next fires: " + v.next_fires.map((t) => local(new Date(t))).join(", ")
            : "Valid.";
        } else {
          area.setAttribute("aria-invalid", "true");
          fires.textContent = "";
          const ul = document.createElement("ul");
          ul.className = "error";
          v.errors.forEach((msg) => {
            const li = document.createElement("li");
            li.textContent = msg;
            ul.appendChild(li);
          });
          out.appendChild(ul);
        }
      } catch (e) {
        /* validation is a convenience; saving checks again */
      }
    };
    area.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(check, 300);
    });
  }

  // Package upload: the file as the request body, streamed by the browser.
  function uploader(form) {
    const status = document.getElementById("upload-status");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const file = document.getElementById("upload-file").files[0];
      if (!file) return;
      const name = (document.getElementById("upload-name").value || file.name).trim();
      const dir = document.getElementById("upload-dir").value.trim();
      status.textContent = `Uploading ${name}…`;
      let url = `/ui/packages/upload?name=${encodeURIComponent(name)}`;
      if (dir) url += `&deploy_dir=${encodeURIComponent(dir)}`;
      try {
        const r = await fetch(url, {
          method: "POST",
          credentials: "same-origin",
          headers: { "x-csrf-token": csrf(), "content-type": "application/octet-stream" },
          body: file,
        });
        const body = await r.json().catch(() => ({}));
        if (r.ok) {
          location.href = `/ui/packages/${encodeURIComponent(body.name || name)}`;
        } else {
          status.textContent = `Upload refused: ${body.message || r.status}${body.details && body.details.length ? " (" + body.details.join("; ") + ")" : ""}`;
          status.className = "error";
        }
      } catch (err) {
        status.textContent = `Upload failed: ${err}`;
        status.className = "error";
      }
    });
  }

  // A running run's output, followed until the run has finished.
  async function follow(pre) {
    const state = document.getElementById("live-state");
    let offset = parseInt(pre.dataset.offset || "0", 10);
    for (;;) {
      try {
        const r = await fetch(`${pre.dataset.live}?offset=${offset}`, { credentials: "same-origin" });
        if (!r.ok) {
          await new Promise((ok) => setTimeout(ok, 2000));
          continue;
        }
        const c = await r.json();
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        if (c.text) pre.append(c.text);
        if (atEnd) pre.scrollTop = pre.scrollHeight;
        offset = c.next_offset;
        pre.dataset.offset = String(offset);
        if (c.finished) break;
        if (!c.text) await new Promise((ok) => setTimeout(ok, 1000));
      } catch (e) {
        await new Promise((ok) => setTimeout(ok, 2000));
      }
    }
    if (state) state.textContent = "finished; loading the result…";
    // Show the stored record once the manager has it.
    for (let i = 0; i < 60; i++) {
      try {
        const r = await fetch(location.href, { credentials: "same-origin" });
        if (r.ok && !(await r.text()).includes("data-live=")) {
          location.reload();
          return;
        }
      } catch (e) {
        /* try again */
      }
      await new Promise((ok) => setTimeout(ok, 1000));
    }
  }

  function start() {
    times(document);
    setInterval(() => times(document), 5000);
    wire(document);
    document.querySelectorAll("[data-refresh]").forEach(refresher);
    document.querySelectorAll("textarea[data-validate]").forEach(editor);
    document.querySelectorAll("form[data-upload]").forEach(uploader);
    document.querySelectorAll("pre[data-live]").forEach(follow);
    document.documentElement.dataset.consoleReady = "1";
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
