// Global mounting options for @vue/test-utils, as the shell's own tests set them:
// `t` translates to the key itself, so tests assert which string a page picks.
const { config } = require('@vue/test-utils');

config.global.mocks = {
  t: (key, args) => (args && Object.keys(args).length ? `${ key } ${ JSON.stringify(args) }` : key),
};
config.global.directives = { 'clean-html': {}, 'clean-tooltip': {}, tooltip: {} };
config.global.stubs = { 'router-link': true, 'router-view': true };
