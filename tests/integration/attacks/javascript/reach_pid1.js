const fs = require("fs");

// PID 1 (the init of a one-run container, the supervisor of a warm environment) runs as the
// run's uid; undumpable, none of it is the run's to read.
const PROBES = {
  "/proc/1/environ": (p) => fs.readFileSync(p),
  "/proc/1/fd": (p) => fs.readdirSync(p),
  "/proc/1/mem": (p) => fs.closeSync(fs.openSync(p, "r")),
  "/proc/1/maps": (p) => fs.readFileSync(p),
  "/proc/1/root": (p) => fs.readdirSync(p),
};

async function Run(engine) {
  const reached = [];
  for (const [path, probe] of Object.entries(PROBES)) {
    try {
      probe(path);
      reached.push(path);
    } catch (e) {
      // refused: what we want
    }
  }
  engine.result.set(reached.length ? "reached " + reached.join(" ") : "pid 1 out of reach");
}
