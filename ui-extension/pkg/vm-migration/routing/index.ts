import SourcesPage from '../pages/sources.vue';
import ImportPage from '../pages/import.vue';
import { PRODUCT } from '../config/types';

const meta = { product: PRODUCT, pkg: PRODUCT };
const base = `/c/:cluster/${ PRODUCT }`;

// Our pages. Lists, details and forms of our types use the shell's generic
// resource routes (c-cluster-product-resource…), which pick our list/, detail/
// and edit/ components by type.
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
];
