// The root app: the shell with pkg/vm-migration built in, as the browser suite and
// hack/up.sh serve it. The installable package is built by `npm run build-pkg vm-migration`.
const path = require('path');
const shellConfig = require('@rancher/shell/vue.config');

const config = shellConfig(__dirname, { excludes: [] });
const configureShell = config.configureWebpack;

// The shell compiles TypeScript with its own tsconfig, whose rootDir (the shell
// package) rejects files of pkg/; ours covers both, with the shell's target
// (ES2018, class fields assigned: the shell's models define some of their
// properties themselves and break on a redefinition).
config.configureWebpack = (webpackConfig) => {
  configureShell(webpackConfig);
  for (const rule of webpackConfig.module.rules) {
    for (const use of rule.use || []) {
      if (use.loader === 'ts-loader') {
        use.options.configFile = path.join(__dirname, 'tsconfig.json');
      }
    }
  }
};

module.exports = config;
