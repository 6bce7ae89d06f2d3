// `npm run build-pkg vm-migration` builds this package on its own (the installable
// extension) with the shell's library build, through the .shell link the script makes.
module.exports = require('./.shell/pkg/vue.config')(__dirname);
