import ListResource from '@shell/pages/c/_cluster/_product/_resource/index.vue';
import CreateResource from '@shell/pages/c/_cluster/_product/_resource/create.vue';
import ViewResource from '@shell/pages/c/_cluster/_product/_resource/_id.vue';
import ViewNamespacedResource from '@shell/pages/c/_cluster/_product/_resource/_namespace/_id.vue';
import SourcesPage from '../pages/sources.vue';
import ImportPage from '../pages/import.vue';
import { PRODUCT } from '../config/types';

const meta = { product: PRODUCT, pkg: PRODUCT };
const base = `/c/:cluster/${ PRODUCT }`;

// Our pages, then the shell's generic resource pages under our product (they pick
// our list/edit/detail components by type).
export default [
  {
    name: `c-cluster-${ PRODUCT }`, path: base, redirect: { name: `c-cluster-${ PRODUCT }-sources` }, meta
  },
  {
    name: `c-cluster-${ PRODUCT }-sources`, path: `${ base }/sources`, component: SourcesPage, meta
  },
  {
    name: `c-cluster-${ PRODUCT }-import`, path: `${ base }/import`, component: ImportPage, meta
  },
  {
    name: `c-cluster-${ PRODUCT }-resource`, path: `${ base }/:resource`, component: ListResource, meta
  },
  {
    name: `c-cluster-${ PRODUCT }-resource-create`, path: `${ base }/:resource/create`, component: CreateResource, meta
  },
  {
    name: `c-cluster-${ PRODUCT }-resource-id`, path: `${ base }/:resource/:id`, component: ViewResource, meta
  },
  {
    name: `c-cluster-${ PRODUCT }-resource-namespace-id`, path: `${ base }/:resource/:namespace/:id`, component: ViewNamespacedResource, meta
  },
];
