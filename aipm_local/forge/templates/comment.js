const form = document.getElementById("comment-form");
if (form) form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("comment-error");
  const button = form.querySelector("button");
  button.disabled = true;
  const response = await fetch(form.dataset.url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "Accept": "application/json"},
    body: JSON.stringify({body: form.elements.body.value})});
  if (response.ok) { window.location.reload(); return; }
  let detail = response.statusText;
  try { detail = (await response.json()).detail || detail; } catch (e) {}
  error.textContent = `${response.status}: ${detail}`;
  button.disabled = false;
});
