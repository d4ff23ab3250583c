const { spawnSync } = require('child_process');

// A child writing to the stderr it inherited: 8 MiB against a 2 MiB output cap.
async function Run(engine) {
  spawnSync('sh', ['-c', 'head -c 8388608 /dev/zero >&2'], { stdio: ['ignore', 'ignore', 'inherit'] });
  engine.result.set('not stopped');
}
