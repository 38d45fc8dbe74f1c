// The review page's few behaviours; every action also works as a plain form post.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Enter in a group's name field renames that group (not the form's first action).
  for (const input of document.querySelectorAll(".rename-input")) {
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        input.parentElement.querySelector("button.rename").click();
      }
    });
  }

  const selection = document.getElementById("selection");
  const update = () => {
    const photos = document.querySelectorAll(".pick-photo:checked").length;
    const groups = document.querySelectorAll(".pick-group:checked").length;
    if (selection) selection.textContent = `${photos} photo(s), ${groups} group(s) selected`;
  };
  document.addEventListener("change", (event) => {
    if (event.target.matches(".pick-photo, .pick-group")) update();
  });

  for (const swatch of document.querySelectorAll(".swatch[data-colour]")) {
    swatch.style.background = swatch.dataset.colour;
  }

  const run = document.getElementById("run");
  if (run) follow(run);
});

// Poll the publish run's status until it ends; a small JSON endpoint, one request a second.
async function follow(element) {
  for (;;) {
    let status;
    try {
      const response = await fetch(element.dataset.url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      status = await response.json();
    } catch (error) {
      element.textContent = `run status unavailable: ${error.message}`;
      return;
    }
    const done = status.done.length ? ` (done: ${status.done.join(", ")})` : "";
    element.textContent = `run ${status.run_id.slice(0, 8)}: ${status.status.toLowerCase()}` +
      ` ${status.done.length}/${status.assets.length} assets${done}` +
      (status.message ? ` ${status.message}` : "");
    element.dataset.status = status.status;
    if (status.finished) {
      element.className = status.success ? "ok" : "error";
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
