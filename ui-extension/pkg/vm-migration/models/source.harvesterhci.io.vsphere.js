// Every source kind shares one model (utils/source-model.js).
export { default } from '../utils/source-model';
