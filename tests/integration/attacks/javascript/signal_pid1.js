// Every signal number at PID 1: a warm environment's supervisor must shrug them all off.
const { constants } = require('os');

async function Run(engine) {
  const refused = [];
  const numbers = new Set(Object.values(constants.signals));
  for (let number = 1; number <= 64; number++) {
    if (!numbers.has(number)) continue; // node sends only the signals it knows by number
    try {
      process.kill(1, number);
    } catch (err) {
      refused.push(`${number}: ${err.code}`);
    }
  }
  engine.result.set(refused.length ? `refused ${refused}` : 'sent');
}
