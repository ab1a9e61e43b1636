// The gallery: the listing as a grid, uploads with progress, live updates from /events, a viewer.
const grid = document.getElementById("grid");
const more = document.getElementById("more");
const statusLine = document.getElementById("status");
const viewer = document.getElementById("viewer");
const full = document.getElementById("full");
const order = document.getElementById("order");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const KEY = "asgilook-api-key";
const MESSAGES = {
  400: "this file is damaged or not a single image",
  401: "an API key is needed",
  403: "this API key may not do that",
  408: "the upload was too slow",
  413: "the file is too large",
  415: "this kind of file is not supported",
  429: "too many requests: try again in a moment",
  503: "the service is busy or its storage is away: try again in a moment",
};

let next = null; // the next page of the listing, from its Link header
let loading = false;
const images = []; // in the grid's order
let current = -1; // the image in the viewer
let allowed = { upload: false, delete: "none" }; // what the service accepts from this page

function authorization() {
  const key = localStorage.getItem(KEY);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function tile(image) {
  const item = document.createElement("li");
  item.dataset.id = image.id;
  const button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-label", `View ${image.name || "image " + image.id}`);
  const picture = document.createElement("img");
  const [width, height] = image.size;
  // NOTE: rows of tiles in the images' proportions (wider ones grow more); the placeholder has
  //   them too, so the grid does not jump while thumbnails load.
  const ratio = width / height;
  item.style.flexGrow = ratio;
  item.style.flexBasis = `calc(${ratio} * var(--row))`;
  picture.width = width;
  picture.height = height;
  picture.style.aspectRatio = `${width} / ${height}`;
  picture.loading = "lazy";
  picture.decoding = "async";
  picture.alt = image.name || `Image uploaded ${image.modified}`;
  const series = image.thumbnails.map((path, index) => `${path} ${image.thumbnail_sizes[index][0]}w`);
  series.push(`${image.image} ${width}w`);
  picture.srcset = series.join(", ");
  // NOTE: a tile grows past its basis (--row) to fill its row: about 1.4 times at most.
  picture.sizes = `(max-width: 40rem) ${Math.min(100, Math.round(ratio * 40))}vw, ${Math.round(ratio * 16)}rem`;
  picture.src = image.thumbnails.length ? image.thumbnails[image.thumbnails.length - 1] : image.image;
  button.append(picture);
  button.addEventListener("click", () => open(images.findIndex((known) => known.id === image.id)));
  item.append(button);
  return item;
}

function add(image, atEnd = true) {
  if (images.some((known) => known.id === image.id)) return;
  const newest = order.value === "newest";
  const first = newest === atEnd;
  if (first) {
    images.unshift(image);
    grid.prepend(tile(image));
  } else {
    images.push(image);
    grid.append(tile(image));
  }
}

function remove(id) {
  const index = images.findIndex((image) => image.id === id);
  if (index < 0) return;
  images.splice(index, 1);
  grid.querySelector(`li[data-id="${id}"]`)?.remove();
  if (viewer.open && index === current) viewer.close();
}

async function loadPage() {
  if (loading || !next) return;
  loading = true;
  try {
    const response = await fetch(next);
    if (!response.ok) throw new Error(await describe(response));
    const link = response.headers.get("Link");
    next = link ? link.match(/<([^>]+)>;\s*rel="?next"?/)?.[1] ?? null : null;
    for (const image of await response.json()) {
      // NOTE: newest first shows each page's images in reverse, as the pages come oldest first.
      add(image, order.value !== "newest");
    }
  } catch (error) {
    statusLine.textContent = `The listing could not be loaded: ${error.message}`;
  } finally {
    loading = false;
  }
  if (next && more.getBoundingClientRect().top < innerHeight * 2) loadPage();
}

function reload() {
  images.length = 0;
  grid.replaceChildren();
  next = "/images?limit=60";
  loadPage();
}

async function describe(response) {
  let detail = "";
  try {
    detail = (await response.json()).description || "";
  } catch {
    // not JSON: the status says enough
  }
  const message = MESSAGES[response.status] || `the service answered ${response.status}`;
  return detail ? `${message} (${detail})` : message;
}

function upload(file) {
  const row = document.createElement("li");
  const label = document.createElement("span");
  label.textContent = file.name;
  const progress = document.createElement("progress");
  progress.max = file.size || 1;
  progress.value = 0;
  progress.setAttribute("aria-label", `Upload of ${file.name}`);
  const outcome = document.createElement("span");
  row.append(label, progress, outcome);
  document.getElementById("uploads").append(row);
  const form = new FormData();
  form.append("file", file, file.name);
  const request = new XMLHttpRequest();
  request.open("POST", "/images");
  for (const [name, value] of Object.entries(authorization())) request.setRequestHeader(name, value);
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) {
      progress.max = event.total;
      progress.value = event.loaded;
    }
  });
  request.addEventListener("load", async () => {
    const response = new Response(request.responseText, { status: request.status });
    if (request.status === 201) {
      progress.value = progress.max;
      outcome.textContent = "uploaded";
      add(JSON.parse(request.responseText));
    } else {
      outcome.textContent = await describe(response);
      outcome.className = "error";
      if (request.status === 401) checkAccess();
    }
  });
  request.addEventListener("error", () => {
    outcome.textContent = "the connection failed";
    outcome.className = "error";
  });
  request.send(form);
}

function askForKey() {
  keyInput.value = localStorage.getItem(KEY) || "";
  keyForm.returnValue = "cancel";
  keyForm.showModal();
}

function keyGiven() {
  const key = keyInput.value.trim();
  keyInput.value = "";
  if (keyForm.returnValue === "save" && key) localStorage.setItem(KEY, key);
  else if (keyForm.returnValue === "forget") localStorage.removeItem(KEY);
  else return;
  checkAccess();
}

function open(index) {
  if (index < 0 || index >= images.length) return;
  current = index;
  const image = images[index];
  full.src = image.image;
  full.alt = image.name || `Image uploaded ${image.modified}`;
  const mine = allowed.key != null && image.owner === allowed.key;
  document.getElementById("delete").hidden = !(allowed.delete === "any" || (allowed.delete === "own" && mine));
  if (!viewer.open) viewer.showModal();
}

async function deleteCurrent() {
  const image = images[current];
  if (!image || !confirm(`Delete ${image.name || "this image"}?`)) return;
  const response = await fetch(image.image, { method: "DELETE", headers: authorization() });
  if (response.status === 204) {
    remove(image.id);
    viewer.close();
  } else {
    statusLine.textContent = `Not deleted: ${await describe(response)}`;
    if (response.status === 401) checkAccess();
  }
}

function listen() {
  const events = new EventSource("/events");
  events.addEventListener("image.created", (event) => add(JSON.parse(event.data)));
  events.addEventListener("image.deleted", (event) => remove(JSON.parse(event.data).id));
  events.addEventListener("reset", reload);
  // NOTE: EventSource reconnects by itself, with Last-Event-ID, after a restart.
}

async function checkAccess() {
  // NOTE: the page offers only what the service accepts from this browser's key, or from none.
  let response = await fetch("/access", { headers: authorization() });
  if (response.status === 401 && localStorage.getItem(KEY)) {
    localStorage.removeItem(KEY);
    statusLine.textContent = "The API key kept in this browser is not one the service knows: it was forgotten.";
    response = await fetch("/access");
  }
  allowed = response.ok ? await response.json() : { upload: false, delete: "none" };
  document.getElementById("upload").hidden = !allowed.upload;
  const keyButton = document.getElementById("key");
  keyButton.hidden = !allowed.keys_configured;
  keyButton.textContent = allowed.key ? `Key: ${allowed.key}` : "Use an API key";
  if (viewer.open) open(current);
}

document.getElementById("files").addEventListener("change", (event) => {
  for (const file of event.target.files) upload(file);
  event.target.value = "";
});
document.getElementById("key").addEventListener("click", askForKey);
keyForm.addEventListener("close", keyGiven);
document.getElementById("close").addEventListener("click", () => viewer.close());
document.getElementById("previous").addEventListener("click", () => open(current - 1));
document.getElementById("next").addEventListener("click", () => open(current + 1));
document.getElementById("delete").addEventListener("click", deleteCurrent);
viewer.addEventListener("keydown", (event) => {
  if (event.key === "ArrowLeft") open(current - 1);
  if (event.key === "ArrowRight") open(current + 1);
});
order.addEventListener("change", reload);
addEventListener("dragover", (event) => {
  event.preventDefault();
  if (allowed.upload) document.body.classList.add("dropping");
});
addEventListener("dragleave", () => document.body.classList.remove("dropping"));
addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dropping");
  if (!allowed.upload) {
    statusLine.textContent = allowed.keys_configured ? "Uploads need an API key." : "Uploads are not accepted here.";
    return;
  }
  for (const file of event.dataTransfer.files) upload(file);
});
new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting)) loadPage();
}, { rootMargin: "100% 0px" }).observe(more);

checkAccess();
listen();
reload();
