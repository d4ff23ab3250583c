const fs = require('fs');
async function Run(engine) {
  fs.writeFileSync('/usr/evil', 'x');
}
