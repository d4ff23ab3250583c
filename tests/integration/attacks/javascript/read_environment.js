const fs = require("fs");

async function Run(engine) {
  const seen = { ...process.env };
  for (const path of ["/proc/1/environ", "/proc/self/environ"]) {
    try {
      seen[path] = fs.readFileSync(path, "latin1");
    } catch (e) {
      seen[path] = String(e);
    }
  }
  engine.result.set(seen, { contentType: "json" });
}
