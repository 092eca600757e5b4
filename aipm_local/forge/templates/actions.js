for (const button of document.querySelectorAll("button[data-url]")) {
  button.addEventListener("click", async () => {
    const error = document.getElementById("action-error");
    button.disabled = true;
    const response = await fetch(button.dataset.url, {method: "POST", body: "{}", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"}});
    if (response.ok) { window.location.reload(); return; }
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) {}
    error.textContent = `${button.textContent} failed: ${response.status} ${detail}`;
    button.disabled = false;
  });
}
