// Unit tests of pkg/vm-migration (kubewarden-ui's setup): jsdom, @vue/vue3-jest for
// single-file components, ts-jest for TypeScript, the shell's own path aliases.
module.exports = {
  testEnvironment:      'jsdom',
  moduleFileExtensions: ['ts', 'js', 'json', 'vue'],
  testMatch:            ['<rootDir>/pkg/**/__tests__/**/*.test.ts'],
  transform:            {
    '^.+\\.ts$':  'ts-jest',
    '^.+\\.js$':  'babel-jest',
    '^.+\\.vue$': '@vue/vue3-jest',
  },
  moduleNameMapper: {
    '^@shell/(.*)$':      '<rootDir>/node_modules/@rancher/shell/$1',
    '^@components/(.*)$': '<rootDir>/node_modules/@rancher/shell/rancher-components/$1',
    '^@pkg/(.*)$':        '<rootDir>/pkg/$1',
    '\\.(css|scss)$':     '<rootDir>/jest.style-stub.js',
  },
  // The shell and Vue ship untranspiled modules.
  transformIgnorePatterns: ['/node_modules/(?!(@rancher|@vue|vue-router|vuex|lodash-es)/)'],
  setupFiles:              ['<rootDir>/jest.setup.js'],
  globals:                 {
    // Transpile only: the build type-checks nothing either (the shell's ts-loader runs transpileOnly).
    'ts-jest':   { isolatedModules: true, tsconfig: { esModuleInterop: true, resolveJsonModule: true, allowJs: true } },
    'vue-jest':  { experimentalCSSCompile: false },
  },
};
