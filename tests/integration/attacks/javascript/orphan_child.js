const { spawn } = require('child_process');
async function Run(engine) {
  spawn('sleep', ['300'], { detached: true, stdio: 'ignore' }).unref();
  engine.result.set('parent done');
}
