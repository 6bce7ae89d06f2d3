// Modules the shell's build makes up or loads by file type, for the type checker of
// `npm run build-pkg` (it checks pkg/ on its own).
declare module '@rancher/auto-import' {
  export function importTypes(plugin: any): void;
}

declare module '*.vue' {
  import { DefineComponent } from 'vue';

  const component: DefineComponent<any, any, any>;

  export default component;
}

declare module '*.json' {
  const value: any;

  export default value;
}
