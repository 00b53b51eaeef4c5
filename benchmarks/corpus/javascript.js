// A tiny event emitter and a debounced search box built on it.

export class Emitter {
  constructor() {
    this.listeners = new Map();
  }

  on(event, listener) {
    if (!this.listeners.has(event)) {
      this.listeners.set(event, []);
    }
    this.listeners.get(event).push(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    const list = this.listeners.get(event);
    if (!list) {
      return;
    }
    const index = list.indexOf(listener);
    if (index >= 0) {
      list.splice(index, 1);
    }
  }

  emit(event, ...args) {
    for (const listener of this.listeners.get(event) || []) {
      listener(...args);
    }
  }
}

export function debounce(fn, wait) {
  let timer = null;
  return function (...args) {
    clearTimeout(timer);
    timer = setTimeout(() => fn.apply(this, args), wait);
  };
}

export async function search(query, { limit = 10, signal } = {}) {
  const params = new URLSearchParams({ q: query, limit: String(limit) });
  const response = await fetch(`/api/search?${params}`, { signal });
  if (!response.ok) {
    throw new Error(`search failed: ${response.status}`);
  }
  const data = await response.json();
  return data.items.map((item) => ({ id: item.id, title: item.title.trim() }));
}

export function attach(input, output) {
  const emitter = new Emitter();
  const run = debounce(async (value) => {
    const results = await search(value);
    emitter.emit("results", results);
  }, 200);
  input.addEventListener("input", (event) => run(event.target.value));
  emitter.on("results", (results) => {
    output.innerHTML = results.map((r) => `<li>${r.title}</li>`).join("");
  });
  return emitter;
}
